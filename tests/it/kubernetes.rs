//! The Kubernetes manifests in deploy/kubernetes, with the real tools:
//!
//! - Debian 12's kubectl 1.20 (kustomize v2.0.3, the oldest the manifests
//!   support) renders the daemon (deploy/kubernetes) and the CronJob variant
//!   (deploy/kubernetes/cronjob); each test checks one property of what it
//!   rendered. scripts/setup unpacks that kubectl into a private directory
//!   (see [`kubectl`]) without installing the package.
//! - kubernetes-validate (from the venv that scripts/setup creates for
//!   these tests, see [`venv`]) validates the built-in kinds strictly against a
//!   current Kubernetes version's schemas.
//! - promtool checks the PrometheusRule's groups and runs the project's rule
//!   unit tests (prometheus/tests) against them.
//! - scripts/gen-kubernetes --check passes here, and fails on a copy whose
//!   rule file changed.
//!
//! The rendered multi-document YAML is turned into JSON by PyYAML in that
//! venv. No service is started. A missing tool fails the test with a message
//! naming scripts/setup; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use crate::harness::*;

/// kubernetes-validate's schemas for this Kubernetes version (it knows
/// 1.25 to 1.37; CronJob's `timeZone` needs 1.27 or later).
const KUBERNETES_VERSION: &str = "1.33.0";
const PROMTOOL: &str = "/usr/bin/promtool";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"),
    }
    .join("pgbackup")
}

/// Debian's kubectl 1.20, as scripts/setup unpacks it.
fn kubectl() -> PathBuf {
    let path = cache_dir().join("kubernetes-client/usr/bin/kubectl");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup (it unpacks Debian's kubernetes-client there)",
        path.display()
    );
    path
}

/// The venv of scripts/bundle/kubernetes-requirements.txt, as scripts/setup
/// creates it.
fn venv() -> PathBuf {
    let dir = match std::env::var_os("PGBACKUP_KUBERNETES_VENV").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => cache_dir().join("kubernetes-venv"),
    };
    for tool in ["python", "kubernetes-validate"] {
        assert!(
            dir.join("bin").join(tool).is_file(),
            "{} is missing: run scripts/setup (it creates the venv of scripts/bundle/kubernetes-requirements.txt)",
            dir.join("bin").join(tool).display()
        );
    }
    dir
}

fn promtool() -> &'static str {
    assert!(
        Path::new(PROMTOOL).is_file(),
        "{PROMTOOL} is missing: run scripts/setup (Debian's prometheus package)"
    );
    PROMTOOL
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn all(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Multi-document YAML (or one document) as a JSON array of its documents.
fn yaml_to_json(yaml: &str) -> Vec<Value> {
    let dir = temp_dir("k8s-yaml");
    let file = dir.join("in.yaml");
    std::fs::write(&file, yaml).unwrap();
    let json = run_ok(Command::new(venv().join("bin/python")).args([
        "-c",
        "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d is not None]\n\
         print(json.dumps(docs))",
        file.to_str().unwrap(),
    ]));
    serde_json::from_str(&json).expect("the YAML helper prints JSON")
}

struct Rendered {
    docs: Vec<Value>,
}

/// `kubectl kustomize <dir>` with kubectl 1.20, once per directory.
fn render(dir: &str) -> &'static Rendered {
    static DAEMON: OnceLock<Rendered> = OnceLock::new();
    static CRONJOB: OnceLock<Rendered> = OnceLock::new();
    let cell = match dir {
        "deploy/kubernetes" => &DAEMON,
        "deploy/kubernetes/cronjob" => &CRONJOB,
        other => panic!("no such variant: {other}"),
    };
    cell.get_or_init(|| {
        let out = output(
            Command::new(kubectl())
                .arg("kustomize")
                .arg(repo().join(dir)),
        );
        assert!(
            out.status.success(),
            "kubectl kustomize {dir} failed: {}",
            all(&out)
        );
        let yaml = String::from_utf8(out.stdout).unwrap();
        Rendered {
            docs: yaml_to_json(&yaml),
        }
    })
}

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among {:?}",
                self.docs
                    .iter()
                    .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                    .collect::<Vec<_>>()
            )
        })
    }

    fn kinds(&self) -> Vec<(String, String)> {
        let mut k: Vec<_> = self
            .docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

fn env_of(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// What the daemon and the CronJob must share: the restricted security
/// context, the secrets as files, the writable /tmp, the settings.
fn check_pod(what: &str, pod: &Value) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: runAsNonRoot");
    // The Dockerfile's user.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("USER 10001:10001"),
        "Dockerfile's user changed"
    );
    assert_eq!(psc["runAsUser"], 10001, "{what}: runAsUser");
    assert_eq!(psc["runAsGroup"], 10001, "{what}: runAsGroup");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
    assert_eq!(pod["enableServiceLinks"], false, "{what}");
    assert_eq!(pod["serviceAccountName"], "pgbackup", "{what}");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(csc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(
        csc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}"
    );

    assert_eq!(c["resources"]["requests"]["memory"], "64Mi", "{what}");
    assert_eq!(c["resources"]["limits"]["memory"], "256Mi", "{what}");
    assert!(
        c["resources"]["limits"].get("cpu").is_none(),
        "{what}: no CPU limit"
    );

    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"], "pgbackup-config",
        "{what}: settings from the ConfigMap"
    );
    let env = env_of(c);
    assert_eq!(env_value(&env, "TMPDIR"), Some("/tmp"), "{what}");
    for (var, file) in [
        ("BACKUP_DATABASE_URL_FILE", "database-url"),
        ("AWS_ACCESS_KEY_ID_FILE", "aws-access-key-id"),
        ("AWS_SECRET_ACCESS_KEY_FILE", "aws-secret-access-key"),
    ] {
        assert_eq!(
            env_value(&env, var),
            Some(format!("/run/secrets/pgbackup/{file}").as_str()),
            "{what}: {var}"
        );
        // Both a variable and its _FILE set is an error.
        let plain = var.trim_end_matches("_FILE");
        assert!(env_value(&env, plain).is_none(), "{what}: {plain} set too");
    }
    // An empty secret file is an error: no webhook unless the user adds one.
    assert!(
        env_value(&env, "BACKUP_WEBHOOK_URL_FILE").is_none(),
        "{what}"
    );

    let mounts: Vec<_> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
                m["readOnly"] == true,
            )
        })
        .collect();
    assert!(
        mounts.contains(&("tmp", "/tmp", false)),
        "{what}: {mounts:?}"
    );
    assert!(
        mounts.contains(&("secrets", "/run/secrets/pgbackup", true)),
        "{what}: {mounts:?}"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{what}: no volume {name}"))
    };
    assert!(volume("tmp")["emptyDir"].is_object(), "{what}");
    assert_eq!(
        volume("secrets")["secret"]["secretName"],
        "pgbackup-secrets",
        "{what}"
    );
}

/// Every resource carries app.kubernetes.io/name: pgbackup.
fn check_common_label(r: &Rendered) {
    for d in &r.docs {
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/name"], "pgbackup",
            "{}/{}",
            d["kind"], d["metadata"]["name"]
        );
    }
}

#[test]
fn kubectl_is_debians_1_20_with_kustomize_2() {
    let out = output(Command::new(kubectl()).args(["version", "--client", "--short"]));
    assert!(out.status.success(), "{}", all(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Client Version: v1.20."),
        "expected kubectl 1.20 (kustomize v2.0.3): {}",
        all(&out)
    );
}

#[test]
fn daemon_renders_the_expected_resources() {
    let r = render("deploy/kubernetes");
    let expected = [
        ("ConfigMap", "pgbackup-config"),
        ("ConfigMap", "pgbackup-dashboard"),
        ("Deployment", "pgbackup"),
        ("NetworkPolicy", "pgbackup"),
        ("PrometheusRule", "pgbackup"),
        ("Secret", "pgbackup-secrets"),
        ("Service", "backup"),
        ("ServiceAccount", "pgbackup"),
        ("ServiceMonitor", "pgbackup"),
    ];
    assert_eq!(r.kinds(), pairs(&expected));
    check_common_label(r);
}

#[test]
fn daemon_is_one_replica_recreated_with_a_restricted_pod() {
    let r = render("deploy/kubernetes");
    let d = r.get("Deployment", "pgbackup");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    check_pod("Deployment", pod);
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["run"]));
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9854);
    assert_eq!(
        env_value(&env_of(c), "BACKUP_LISTEN_ADDRESS"),
        Some("0.0.0.0:9854")
    );
    // Selector and pod labels agree.
    let selector = d["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "pod label {k}");
    }
}

#[test]
fn daemon_probes_only_healthz() {
    let r = render("deploy/kubernetes");
    let c = &r.get("Deployment", "pgbackup")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    // /health turns 503 on an old or failed backup: as a readiness probe it
    // would stop the scrapes that carry the alert.
    if let Some(probe) = c.get("readinessProbe") {
        assert_eq!(probe["httpGet"]["path"], "/healthz");
    }
    assert!(c.get("startupProbe").is_none());
}

#[test]
fn daemon_is_scraped_as_job_backup() {
    let r = render("deploy/kubernetes");
    let d = r.get("Deployment", "pgbackup");
    let svc = r.get("Service", "backup");
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9854);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    // The Service selects the daemon's pods.
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    // The ServiceMonitor selects the Service, on its port, as job="backup".
    let sm = r.get("ServiceMonitor", "pgbackup");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        endpoint["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rl| rl["targetLabel"] == "job" && rl["replacement"] == "backup"),
        "{endpoint}"
    );
    // kube-prometheus-stack's default selectors.
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert_eq!(
        r.get("PrometheusRule", "pgbackup")["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
}

#[test]
fn network_policy_opens_the_metrics_port_and_egress_to_dns_database_and_store() {
    let r = render("deploy/kubernetes");
    let np = &r.get("NetworkPolicy", "pgbackup")["spec"];
    assert_eq!(
        np["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "pgbackup"
    );
    assert_eq!(np["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    let ingress = np["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": "metrics"}])
    );
    let mut egress_ports: Vec<(String, i64)> = np["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["ports"].as_array().unwrap().clone())
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    egress_ports.sort();
    assert_eq!(
        egress_ports,
        vec![
            ("TCP".to_string(), 53),
            ("TCP".to_string(), 443),
            ("TCP".to_string(), 5432),
            ("UDP".to_string(), 53)
        ]
    );
}

#[test]
fn cronjob_renders_the_expected_resources() {
    let r = render("deploy/kubernetes/cronjob");
    let expected = [
        ("ConfigMap", "pgbackup-config"),
        ("ConfigMap", "pgbackup-dashboard"),
        ("CronJob", "pgbackup"),
        ("NetworkPolicy", "pgbackup"),
        ("NetworkPolicy", "pgbackup-pushgateway"),
        ("PrometheusRule", "pgbackup"),
        ("Secret", "pgbackup-secrets"),
        ("ServiceAccount", "pgbackup"),
    ];
    assert_eq!(r.kinds(), pairs(&expected));
    check_common_label(r);
    // The shared resources are the daemon's, unchanged.
    let daemon = render("deploy/kubernetes");
    for (kind, name) in [
        ("ConfigMap", "pgbackup-config"),
        ("ConfigMap", "pgbackup-dashboard"),
        ("NetworkPolicy", "pgbackup"),
        ("PrometheusRule", "pgbackup"),
        ("Secret", "pgbackup-secrets"),
        ("ServiceAccount", "pgbackup"),
    ] {
        assert_eq!(r.get(kind, name), daemon.get(kind, name), "{kind} {name}");
    }
}

#[test]
fn cronjob_runs_one_backup_at_a_time_and_pushes_under_a_stable_instance() {
    let r = render("deploy/kubernetes/cronjob");
    let cj = r.get("CronJob", "pgbackup");
    assert_eq!(cj["apiVersion"], "batch/v1");
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert!(spec["startingDeadlineSeconds"].as_i64().unwrap() > 0);
    let job = &spec["jobTemplate"]["spec"];
    let backoff = job["backoffLimit"].as_i64().unwrap();
    assert!((0..=2).contains(&backoff), "backoffLimit {backoff}");
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    check_pod("CronJob", pod);
    // The same pod security as the daemon's.
    let daemon = render("deploy/kubernetes");
    let dpod = &daemon.get("Deployment", "pgbackup")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"], dpod["securityContext"]);
    assert_eq!(
        pod["containers"][0]["securityContext"],
        dpod["containers"][0]["securityContext"]
    );
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["backup"]));
    assert!(c.get("ports").is_none(), "the CronJob listens on nothing");
    let env = env_of(c);
    let instance = env_value(&env, "BACKUP_INSTANCE").unwrap_or("");
    assert!(!instance.is_empty(), "BACKUP_INSTANCE must be set: {env:?}");
    let url = env_value(&env, "BACKUP_PUSHGATEWAY_URL").unwrap_or("");
    assert!(url.starts_with("http"), "BACKUP_PUSHGATEWAY_URL: {env:?}");
    // The Pushgateway's port is open to the CronJob's pods.
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let np = &r.get("NetworkPolicy", "pgbackup-pushgateway")["spec"];
    assert_eq!(
        np["egress"][0]["ports"][0]["port"].to_string(),
        port,
        "{np}"
    );
    let pod_labels = &job["template"]["metadata"]["labels"];
    for (k, v) in np["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "pushgateway policy selector {k}");
    }
}

/// Validates the built-in kinds (not Prometheus Operator's) strictly.
fn kubernetes_validate(docs: &[&Value]) -> Output {
    let dir = temp_dir("k8s-validate");
    let file = dir.join("manifests.yaml");
    // JSON documents are YAML documents.
    let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    std::fs::write(&file, text.join("\n---\n")).unwrap();
    output(
        Command::new(venv().join("bin/kubernetes-validate"))
            .args(["-k", KUBERNETES_VERSION, "--strict"])
            .arg(&file),
    )
}

#[test]
fn builtin_kinds_pass_kubernetes_validate() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes/cronjob"] {
        let r = render(dir);
        let builtin: Vec<&Value> = r
            .docs
            .iter()
            .filter(|d| {
                !d["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with("monitoring.coreos.com/")
            })
            .collect();
        assert!(builtin.len() >= 6, "{dir}: {}", builtin.len());
        let out = kubernetes_validate(&builtin);
        let text = all(&out);
        assert!(out.status.success(), "{dir}: {text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            builtin.len(),
            "{dir}: every resource validated: {text}"
        );
    }
    // The validator does reject what the API server would: an unknown field.
    let mut broken = render("deploy/kubernetes")
        .get("Deployment", "pgbackup")
        .clone();
    broken["spec"]["replica"] = serde_json::json!(1);
    let out = kubernetes_validate(&[&broken]);
    assert!(!out.status.success(), "a typo passed: {}", all(&out));
}

/// The rule file's groups (prometheus/rules/pgbackup.yml), as JSON.
fn rule_file_groups() -> Value {
    let text = std::fs::read_to_string(repo().join("prometheus/rules/pgbackup.yml")).unwrap();
    yaml_to_json(&text)[0]["groups"].clone()
}

fn rule_groups_of(dir: &str) -> Value {
    render(dir).get("PrometheusRule", "pgbackup")["spec"]["groups"].clone()
}

#[test]
fn prometheus_rule_groups_are_the_rule_files() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes/cronjob"] {
        assert_eq!(rule_groups_of(dir), rule_file_groups(), "{dir}");
    }
}

/// The PrometheusRule's groups as a rule file.
fn extracted_rule_file(dir: &str, into: &Path) -> PathBuf {
    let file = into.join("rules.yml");
    let doc = serde_json::json!({ "groups": rule_groups_of(dir) });
    std::fs::write(&file, doc.to_string()).unwrap();
    file
}

#[test]
fn prometheus_rules_pass_promtool_check() {
    for dir in ["deploy/kubernetes", "deploy/kubernetes/cronjob"] {
        let tmp = temp_dir("k8s-rules");
        let file = extracted_rule_file(dir, &tmp);
        let out = output(Command::new(promtool()).args(["check", "rules"]).arg(&file));
        assert!(out.status.success(), "{dir}: {}", all(&out));
    }
}

#[test]
fn prometheus_rules_pass_the_projects_rule_tests() {
    let tmp = temp_dir("k8s-rule-tests");
    let rules = extracted_rule_file("deploy/kubernetes", &tmp);
    let mut tests = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(repo().join("prometheus/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let from = "rule_files:\n  - ../rules/pgbackup.yml\n";
        assert_eq!(
            text.matches(from).count(),
            1,
            "{} no longer names its rule file as expected",
            path.display()
        );
        let to = format!("rule_files:\n  - {}\n", rules.display());
        let copy = tmp.join(path.file_name().unwrap());
        std::fs::write(&copy, text.replace(from, &to)).unwrap();
        tests.push(copy);
    }
    let out = output(
        Command::new(promtool())
            .args(["test", "rules"])
            .args(&tests),
    );
    assert!(out.status.success(), "{}", all(&out));
}

#[test]
fn dashboard_configmap_holds_the_dashboard_byte_for_byte() {
    let dashboard =
        std::fs::read_to_string(repo().join("grafana/dashboards/pgbackup.json")).unwrap();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/cronjob"] {
        let cm = render(dir).get("ConfigMap", "pgbackup-dashboard");
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "{dir}");
        assert_eq!(cm["data"].as_object().unwrap().len(), 1, "{dir}");
        let held = cm["data"]["pgbackup.json"].as_str().unwrap();
        assert!(
            held == dashboard,
            "{dir}: the ConfigMap's pgbackup.json differs from the dashboard"
        );
    }
}

fn gen_kubernetes(root: &Path, check: bool) -> Output {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(root.join("scripts/gen-kubernetes"));
    if check {
        cmd.arg("--check");
    }
    output(&mut cmd)
}

#[test]
fn generated_files_are_up_to_date() {
    let out = gen_kubernetes(&repo(), true);
    assert!(
        out.status.success(),
        "run scripts/gen-kubernetes: {}",
        all(&out)
    );
}

#[test]
fn gen_kubernetes_check_fails_when_the_rule_file_changed() {
    let root = temp_dir("k8s-gen");
    for rel in [
        "scripts/gen-kubernetes",
        "prometheus/rules/pgbackup.yml",
        "grafana/dashboards/pgbackup.json",
        "deploy/kubernetes/base-common/prometheusrule.yaml",
        "deploy/kubernetes/base-common/grafana-dashboard.yaml",
    ] {
        std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(repo().join(rel), root.join(rel)).unwrap();
    }
    let out = gen_kubernetes(&root, true);
    assert!(
        out.status.success(),
        "the copy starts up to date: {}",
        all(&out)
    );

    let rules = root.join("prometheus/rules/pgbackup.yml");
    let text = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, text.replace("severity: critical", "severity: page")).unwrap();
    let out = gen_kubernetes(&root, true);
    assert_eq!(out.status.code(), Some(1), "{}", all(&out));
    let text = all(&out);
    assert!(
        text.contains("deploy/kubernetes/base-common/prometheusrule.yaml")
            && !text.contains("grafana-dashboard.yaml"),
        "{text}"
    );

    let out = gen_kubernetes(&root, false);
    assert!(out.status.success(), "{}", all(&out));
    let out = gen_kubernetes(&root, true);
    assert!(out.status.success(), "regenerated: {}", all(&out));
    let generated =
        std::fs::read_to_string(root.join("deploy/kubernetes/base-common/prometheusrule.yaml"))
            .unwrap();
    assert!(generated.contains("severity: page"));
}
