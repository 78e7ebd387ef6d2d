//! The secrets a config names by environment variable (`[admin] token_env`,
//! `read_auth`), read when a config is loaded (at start-up and at each reload),
//! after validation: validation stays a function of the file alone.

use super::model::Config;
use super::problems::{KeyPath, Problem, Problems};

/// Fills in the admin token and read password from the environment; a variable
/// that is unset or empty is a problem named by its key and line.
pub(super) fn resolve(cfg: &mut Config, src: &str) -> Result<(), Vec<Problem>> {
    let mut p = Problems::new(src);
    let at = KeyPath::default().key("admin");
    let mut read = |key: &'static str, var: &str| match secret(var) {
        Ok(v) => Some(v),
        Err(e) => {
            p.add(&at.key(key), e);
            None
        }
    };
    let admin = &mut cfg.admin;
    admin.token = admin
        .token_env
        .as_deref()
        .and_then(|v| read("token_env", v));
    admin.read_auth = admin
        .read_auth_env
        .as_ref()
        .and_then(|(user, var)| read("read_auth", var).map(|pw| (user.clone(), pw)));
    if p.list.is_empty() {
        Ok(())
    } else {
        Err(p.list)
    }
}

/// A secret from the environment: set, UTF-8 and not empty, or why not.
pub(super) fn secret(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(format!("environment variable {var:?} is empty")),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {var:?} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var:?} is not valid UTF-8"))
        }
    }
}
