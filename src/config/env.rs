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
    let mut read = |key: &'static str, var: &str| match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            p.add(
                &at.key(key),
                format!("environment variable {var:?} is not set (or empty)"),
            );
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
