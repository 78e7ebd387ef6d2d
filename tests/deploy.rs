//! The deployment files: every Kubernetes manifest and the compose file parse
//! as YAML; the rampart configs inside them are accepted by `rampart check`;
//! ports, probe paths, the stop budget and the security context are what
//! rampart serves and needs. (kubeconform and kubectl cannot be installed on
//! these machines: the checks below are ours.)

mod common;

use common::*;
use serde_norway::Value;
use std::path::Path;

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a multi-document YAML file.
fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            let mut v: Value =
                serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}"));
            // YAML merge keys (`<<: *anchor`), as docker compose applies them
            v.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
            v
        })
        .collect()
}

fn kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == k).collect()
}

/// Runs `rampart check` on a config (written next to its other files, if
/// `dir` is given); its TOML parsed, for the caller's checks.
fn check(config: &str, dir: Option<&Path>, env: &[(&str, &str)]) -> toml::Value {
    let dir = dir.map_or_else(|| temp_dir("deploy"), Path::to_path_buf);
    let path = dir.join("checked.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(rampart_bin())
        .args(["check", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "rampart check refused it:\n{}\n{config}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(config).unwrap()
}

fn port_of(bind: &str) -> u64 {
    bind.rsplit(':').next().unwrap().parse().unwrap()
}

fn secs(d: &str) -> u64 {
    d.trim_end_matches('s').parse().unwrap()
}

/// The checks every rampart Deployment (or sidecar) must pass against its config.
fn rampart_container(c: &Value, cfg: &toml::Value, grace: u64, sidecar: bool) {
    let admin_bind = cfg["admin"]["bind"].as_str().unwrap();
    assert!(
        !admin_bind.starts_with("127."),
        "the kubelet probes the pod's address, not loopback: admin.bind = {admin_bind}"
    );
    let admin = port_of(admin_bind);
    // probes on the admin port: liveness /live, readiness /ready (separate)
    let probe_port = |probe: &Value| -> u64 {
        match &probe["httpGet"]["port"] {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => c["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no port named {name}")),
            _ => panic!("probe without a port"),
        }
    };
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(probe_port(&c["livenessProbe"]), admin);
    let ready = if sidecar {
        &c["startupProbe"]
    } else {
        &c["readinessProbe"]
    };
    assert_eq!(ready["httpGet"]["path"], "/ready");
    assert_eq!(probe_port(ready), admin);
    if !sidecar {
        // every listener's port is a container port, and so is the admin's
        let ports: Vec<u64> = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert!(ports.contains(&admin), "{ports:?}");
        for l in cfg["listener"].as_array().unwrap() {
            for b in l["bind"].as_array().unwrap() {
                let p = port_of(b.as_str().unwrap());
                assert!(ports.contains(&p), "listener port {p} not in {ports:?}");
            }
        }
    }
    // the stop: the drain budget fits in the pod's grace period
    let budget = secs(cfg["global"]["drain_budget"].as_str().unwrap());
    if sidecar {
        // stopped after the app, its only client: no propagation wait, which
        // would only hold the pod's deletion
        assert_eq!(cfg["global"]["drain_delay"].as_str(), Some("0s"));
    }
    assert!(
        budget < grace,
        "drain_budget {budget}s >= terminationGracePeriodSeconds {grace}"
    );
    // hardened
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // with every capability dropped, a binary that carries a file capability
    // cannot be run at all (exec: operation not permitted): the image's has none
    let dockerfile = std::fs::read_to_string(repo("docker/Dockerfile")).unwrap();
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.contains("setcap") && !l.trim_start().starts_with('#')),
        "docker/Dockerfile sets a file capability"
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    // the config comes from the ConfigMap, read-only
    assert_eq!(c["args"][2], "/etc/rampart/rampart.toml");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/rampart");
    assert_eq!(cfg["global"]["watch_config"].as_bool(), Some(true));
}

#[test]
fn kubernetes_manifests() {
    for (file, sidecar, env) in [
        ("deploy/k8s/rampart-api.yaml", false, vec![]),
        (
            "deploy/k8s/postgres.yaml",
            false,
            vec![("PGCHECK_PASSWORD", "x")],
        ),
        ("deploy/k8s/sidecar.yaml", true, vec![]),
    ] {
        let docs = documents(file);
        let cm = kind(&docs, "ConfigMap");
        assert_eq!(cm.len(), 1, "{file}");
        let cfg = check(cm[0]["data"]["rampart.toml"].as_str().unwrap(), None, &env);
        let dep = kind(&docs, "Deployment");
        assert_eq!(dep.len(), 1, "{file}");
        let spec = &dep[0]["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{file}");
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        let (c, volumes) = if sidecar {
            // a native sidecar: an init container that keeps running
            let c = &spec["initContainers"][0];
            assert_eq!(c["restartPolicy"], "Always", "{file}");
            (c, &spec["volumes"])
        } else {
            (&spec["containers"][0], &spec["volumes"])
        };
        rampart_container(c, &cfg, grace, sidecar);
        assert_eq!(
            volumes[0]["configMap"]["name"], cm[0]["metadata"]["name"],
            "{file}: the config volume is the ConfigMap"
        );
        if !sidecar {
            let ann = &dep[0]["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(ann["prometheus.io/scrape"], "true", "{file}");
            let admin = port_of(cfg["admin"]["bind"].as_str().unwrap());
            assert_eq!(
                ann["prometheus.io/port"],
                admin.to_string().as_str(),
                "{file}"
            );
        }
    }
    // the API front: 2 replicas, a PodDisruptionBudget, a headless Service of pods
    let docs = documents("deploy/k8s/rampart-api.yaml");
    assert_eq!(kind(&docs, "Deployment")[0]["spec"]["replicas"], 2);
    assert_eq!(
        kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        1
    );
    let headless = kind(&docs, "Service")
        .into_iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    let name = headless["metadata"]["name"].as_str().unwrap();
    let cfg: toml::Value = toml::from_str(
        kind(&docs, "ConfigMap")[0]["data"]["rampart.toml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let server = cfg["pool"][0]["server"][0]["address"].as_str().unwrap();
    assert!(
        server.starts_with(&format!("{name}.")),
        "the pool resolves the headless Service: {server}"
    );
}

#[test]
fn compose_vip_pair() {
    let docs = documents("docker/compose.yaml");
    let services = &docs[0]["services"];
    for node in ["lb-a", "lb-b"] {
        let s = &services[node];
        let caps: Vec<&str> = s["cap_add"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            caps.contains(&"NET_ADMIN") && caps.contains(&"NET_RAW"),
            "{node}"
        );
        // Docker gives added capabilities to root only
        assert_eq!(s["user"].as_str(), Some("0:0"), "{node}");
        let cfg_path = s["command"][2].as_str().unwrap();
        let file = cfg_path.strip_prefix("/etc/rampart/").unwrap();
        let dir = Path::new(&repo("docker/compose")).to_path_buf();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let cfg = check(&text, Some(&dir), &[]);
        // the node's address is its heartbeat address, the other node its peer
        let me = s["networks"]["net"]["ipv4_address"].as_str().unwrap();
        assert_eq!(cfg["ha"]["bind"].as_str().unwrap(), format!("{me}:5405"));
        let other = if node == "lb-a" { "lb-b" } else { "lb-a" };
        let peer = services[other]["networks"]["net"]["ipv4_address"]
            .as_str()
            .unwrap();
        assert_eq!(
            cfg["ha"]["peers"][0].as_str().unwrap(),
            format!("{peer}:5405")
        );
        // its stop fits in the stop grace period
        let budget = secs(cfg["global"]["drain_budget"].as_str().unwrap());
        let grace = secs(s["stop_grace_period"].as_str().unwrap());
        assert!(budget < grace, "{node}");
        // the backends are the compose file's
        for srv in cfg["pool"][0]["server"].as_array().unwrap() {
            let ip = srv["address"].as_str().unwrap().split(':').next().unwrap();
            assert!(
                ["api-1", "api-2"]
                    .iter()
                    .any(|b| services[*b]["networks"]["net"]["ipv4_address"] == ip),
                "{node}: {ip} is not a backend of the compose file"
            );
        }
    }
}
