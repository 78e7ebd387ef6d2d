//! `[admin]`: where the admin server listens and how it authenticates. The
//! secrets themselves come from the environment, read after validation
//! (`config::env`): validation only checks how they are named.

use crate::config::file::*;
use crate::config::model::*;
use crate::config::problems::{KeyPath, Problems};

pub(super) fn admin(
    a: &AdminFile,
    aat: &KeyPath,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Admin {
    if !a.bind.0.ip().to_canonical().is_loopback() && a.read_auth.is_none() {
        warnings.push(format!(
            "[admin] bind = \"{}\" is reachable from other hosts and read_auth is not set: \
             the stats page, metrics and API (quota keys included) are readable by anyone \
             who can reach it",
            a.bind.0
        ));
    }
    let read_auth_env = match a.read_auth.as_deref() {
        None => None,
        Some(s) => match s.split_once(':') {
            Some((user, var)) if !user.is_empty() && !var.is_empty() => {
                Some((user.to_string(), var.to_string()))
            }
            _ => {
                p.add(
                    &aat.key("read_auth"),
                    format!("write \"user:PASSWORD_ENV\", got {s:?}"),
                );
                None
            }
        },
    };
    Admin {
        bind: a.bind.0,
        token_env: a.token_env.clone(),
        read_auth_env,
        token: None,
        read_auth: None,
    }
}
