//! The admin API's JSON request bodies, parsed and checked without touching
//! any state: what the handlers act on, and what `fuzz/` feeds arbitrary
//! bytes to. Every refusal is a message for a 400.

use crate::pool::AdminState;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaResetBody {
    key: String,
    limit: Option<String>,
}

/// `POST /api/quotas/reset` `{"key": "...", "limit": "name"}`: (key, limit).
pub fn quota_reset(body: &[u8]) -> Result<(String, Option<String>), String> {
    let r: QuotaResetBody = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"key\": \"...\", \"limit\": \"name\"}}: {e}"))?;
    Ok((r.key, r.limit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: String,
}

/// `POST /api/listeners/{name}/mode` `{"mode": "read-only"|"normal"}`:
/// whether read-only.
pub fn mode_change(body: &[u8]) -> Result<bool, String> {
    match serde_json::from_slice::<ModeBody>(body) {
        Ok(c) if c.mode == "read-only" => Ok(true),
        Ok(c) if c.mode == "normal" => Ok(false),
        _ => Err("expected {\"mode\": \"read-only\"|\"normal\"}".into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerBody {
    state: Option<String>,
    weight: Option<u32>,
}

/// `POST /api/pools/{pool}/servers/{server}` `{"state": ..., "weight": N}`.
pub fn server_change(body: &[u8]) -> Result<(Option<AdminState>, Option<u32>), String> {
    let change: ServerBody = serde_json::from_slice(body).map_err(|e| {
        format!("expected {{\"state\": \"ready\"|\"drain\"|\"maint\", \"weight\": N}}: {e}")
    })?;
    let state = match change.state.as_deref() {
        None => None,
        Some(s) => Some(AdminState::parse(s).ok_or_else(|| {
            format!("unknown state {s:?}: use \"ready\", \"drain\" or \"maint\"")
        })?),
    };
    if let Some(w) = change.weight {
        if w > crate::config::MAX_WEIGHT {
            return Err("weight must be between 0 and 256".into());
        }
    }
    if state.is_none() && change.weight.is_none() {
        return Err("nothing to change: give \"state\" and/or \"weight\"".into());
    }
    Ok((state, change.weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(quota_reset(br#"{"key":"k"}"#).unwrap(), ("k".into(), None));
        assert!(quota_reset(br#"{"key":"k","x":1}"#).is_err());
        assert!(mode_change(br#"{"mode":"read-only"}"#).unwrap());
        assert!(mode_change(br#"{"mode":"ro"}"#).is_err());
        assert_eq!(server_change(br#"{"weight":3}"#).unwrap(), (None, Some(3)));
        assert!(server_change(br#"{"weight":300}"#).is_err());
        assert!(server_change(br#"{}"#).is_err());
        assert!(server_change(br#"{"state":"up"}"#).is_err());
    }
}
