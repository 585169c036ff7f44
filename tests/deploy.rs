//! Checks of the deployment files (`deploy/`, `.dockerignore`, and the Grafana provisioning the
//! compose file mounts): every YAML file parses; the PrometheusRule is exactly `alerts.yml`; the
//! Kubernetes, systemd and compose files agree with each other, with the exporter's default
//! port and with its endpoints; the example configurations pass `--config.check`; and, where the
//! tools are installed, `docker-compose config -q`, `systemd-analyze verify`, `promtool check
//! config` and `amtool check-config` accept the files. A missing tool skips its part locally and
//! fails in CI (`BALANCE_EXPORTER_CI=1`).

mod common;
mod dashboards;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use balance_exporter::server::DEFAULT_PORT;
use common::{TempDir, assert_silent_success, describe, run_binary, run_in, tool};
use dashboards::{read, repo};
use serde::Deserialize;
use serde_yaml::Value;

/// A file of the repository, by its path relative to the repository.
fn text(rel: &str) -> String {
    read(&repo().join(rel))
}

/// Every document of a (possibly multi-document) YAML text.
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("parsing {what}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of a YAML file of the repository.
fn yaml(rel: &str) -> Value {
    let mut docs = documents(&text(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

fn seq_of<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
}

/// The Kubernetes object of `kind` in deploy/kubernetes (exactly one).
fn k8s(kind: &str) -> Value {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut files);
    let mut found: Vec<Value> = files
        .iter()
        .flat_map(|f| documents(&read(f), &f.display().to_string()))
        .filter(|doc| doc["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} in deploy/kubernetes");
    found.remove(0)
}

// ---------------------------------------------------------------------------------------------
// YAML, and the PrometheusRule.

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy"), &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(repo().join("deploy"))
                .expect("under deploy/")
                .display()
                .to_string()
        })
        .collect();
    for expected in [
        "docker-compose.yml",
        "compose/prometheus.yml",
        "compose/alertmanager.yml",
        "kubernetes/deployment.yaml",
        "kubernetes/prometheusrule.yaml",
        "kubernetes/secret.example.yaml",
        "systemd/balance_exporter.yml",
        "prometheus/alerts.yml",
    ] {
        assert!(names.contains(expected), "deploy/{expected} is missing");
    }
    for file in &files {
        let docs = documents(&read(file), &file.display().to_string());
        assert!(!docs.is_empty(), "{}: no YAML document", file.display());
        if file.parent().is_some_and(|d| d.ends_with("kubernetes")) {
            for doc in &docs {
                for key in ["apiVersion", "kind"] {
                    str_of(&doc[key], &format!("{}: {key}", file.display()));
                }
            }
        }
    }
}

#[test]
fn kustomization_lists_every_manifest_but_the_secret_example() {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<&str> = seq_of(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resources[]"))
        .collect();
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut files);
    let manifests: BTreeSet<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "kustomization.yaml" && name != "secret.example.yaml")
        .collect();
    let manifests: BTreeSet<&str> = manifests.iter().map(String::as_str).collect();
    assert_eq!(listed, manifests);
}

#[test]
fn prometheus_rule_groups_are_exactly_the_alert_rules() {
    let rule = k8s("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let groups = &alerts["groups"];
    assert!(
        seq_of(groups, "alerts.yml groups").len() >= 5,
        "alerts.yml has its groups"
    );
    assert!(
        rule["spec"]["groups"] == *groups,
        "deploy/kubernetes/prometheusrule.yaml's spec.groups differ from \
         deploy/prometheus/alerts.yml's groups: regenerate it (the command is in its header)"
    );
    // The comparison is deep: one changed `for:` in one rule is a difference.
    let mut drifted = groups.clone();
    drifted[0]["rules"][0]["for"] = Value::from("2m");
    assert!(rule["spec"]["groups"] != drifted);
}

// ---------------------------------------------------------------------------------------------
// Kubernetes.

fn container(deployment: &Value) -> &Value {
    let containers = seq_of(
        &deployment["spec"]["template"]["spec"]["containers"],
        "containers",
    );
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The mount path of the pod volume that `pick` selects (e.g. the one with a `configMap`).
fn mount_of(deployment: &Value, pick: impl Fn(&Value) -> bool) -> (String, Value) {
    let volumes = seq_of(
        &deployment["spec"]["template"]["spec"]["volumes"],
        "volumes",
    );
    let volume = volumes
        .iter()
        .find(|v| pick(v))
        .unwrap_or_else(|| panic!("no such volume in {volumes:?}"));
    let mounts = seq_of(&container(deployment)["volumeMounts"], "volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("volume {:?} is not mounted", volume["name"]));
    assert_eq!(mount["readOnly"], true, "{mount:?} is read-only");
    (
        str_of(&mount["mountPath"], "mountPath").to_owned(),
        volume.clone(),
    )
}

#[test]
fn deployment_runs_non_root_on_a_read_only_root_with_probes_and_limits() {
    let deployment = k8s("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let c = container(&deployment);

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0),
        "a non-zero runAsUser"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], Value::from(vec!["ALL"]));

    let port = &seq_of(&c["ports"], "ports")[0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(DEFAULT_PORT))
    );
    for (probe, path) in [
        ("livenessProbe", "/-/healthy"),
        ("readinessProbe", "/-/ready"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["memory"].is_string(),
            "resources.{kind}.memory is set"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // One token holder per UQPay key: never two pods at once, not even during a rollout.
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
}

/// Paths named by the `*_file` keys of a configuration, as (account key, path).
fn secret_files(config: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for account in seq_of(&config["accounts"], "accounts") {
        for (key, value) in account.as_mapping().expect("an account is a mapping") {
            let key = str_of(key, "account key");
            if key.ends_with("_file") {
                out.push((key.to_owned(), str_of(value, key).to_owned()));
            }
        }
    }
    assert!(!out.is_empty(), "the example reads its secrets from files");
    out
}

/// Runs `--config.check` on an example configuration whose secret files live under
/// `secret_dir`, with that folder replaced by a scratch one holding stand-ins: the test keys of
/// testdata/payby for PayBy's keys (they must parse), a dummy value for the rest. Returns the
/// file names the configuration expects in `secret_dir`.
fn assert_example_config_checks(config_text: &str, secret_dir: &str) -> BTreeSet<String> {
    let config: Value = serde_yaml::from_str(config_text).expect("the example config is YAML");
    let scratch = TempDir::new("deploy-config");
    let mut names = BTreeSet::new();
    for (key, path) in secret_files(&config) {
        let name = path
            .strip_prefix(secret_dir)
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or_else(|| panic!("{key}: {path} is not in {secret_dir}"));
        let contents = match key.as_str() {
            "private_key_file" => text("testdata/payby/merchant_private_key_pkcs8.pem"),
            "payby_public_key_file" => text("testdata/payby/payby_public_key.pem"),
            _ => "dummy-secret\n".to_owned(),
        };
        scratch.write(name, &contents);
        names.insert(name.to_owned());
    }
    let relocated = config_text.replace(secret_dir, &scratch.0.display().to_string());
    let file = scratch.write("balance_exporter.yml", &relocated);
    let file = file.to_str().expect("UTF-8 temp path");
    let (code, stdout, stderr) = run_binary(&["--config.file", file, "--config.check"], &[]);
    assert_eq!(
        code, 0,
        "--config.check refused the example:\n{stdout}\n{stderr}"
    );
    names
}

#[test]
fn kubernetes_config_passes_config_check_and_reads_the_secrets_mounted() {
    let deployment = k8s("Deployment");
    let config_map = k8s("ConfigMap");
    let secret = k8s("Secret");

    let (config_dir, config_volume) = mount_of(&deployment, |v| !v["configMap"].is_null());
    assert_eq!(
        config_volume["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let (secret_dir, secret_volume) = mount_of(&deployment, |v| !v["secret"].is_null());
    assert_eq!(
        secret_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );

    // The container is started with the ConfigMap's one key as its configuration file.
    let data = config_map["data"].as_mapping().expect("ConfigMap data");
    assert_eq!(data.len(), 1, "one configuration file in the ConfigMap");
    let (key, config_text) = data.iter().next().expect("one entry");
    let expected_arg = format!("--config.file={config_dir}/{}", str_of(key, "data key"));
    let args: Vec<&str> = seq_of(&container(&deployment)["args"], "args")
        .iter()
        .map(|a| str_of(a, "args[]"))
        .collect();
    assert!(args.contains(&expected_arg.as_str()), "{args:?}");

    let needed = assert_example_config_checks(str_of(config_text, "config"), &secret_dir);
    let provided: BTreeSet<String> = secret["stringData"]
        .as_mapping()
        .expect("the Secret example has stringData")
        .keys()
        .map(|k| str_of(k, "stringData key").to_owned())
        .collect();
    assert_eq!(
        needed, provided,
        "the Secret example holds what the config reads"
    );
}

#[test]
fn service_and_service_monitor_scrape_the_metrics_port_as_job_balance_exporter() {
    let deployment = k8s("Deployment");
    let service = k8s("Service");
    let monitor = k8s("ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");

    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(&pod_labels[key], value, "the Service selects the pods");
    }
    let port = &seq_of(&service["spec"]["ports"], "ports")[0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(port["targetPort"], "metrics");
    assert_eq!(port["port"].as_u64(), Some(u64::from(DEFAULT_PORT)));

    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects the Service"
        );
    }
    let endpoint = &seq_of(&monitor["spec"]["endpoints"], "endpoints")[0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    // The operator names the job after the Service's label `jobLabel`; the alert rules'
    // BalanceExporterDown looks for job="balance_exporter".
    let job_label = str_of(&monitor["spec"]["jobLabel"], "jobLabel");
    assert_eq!(service["metadata"]["labels"][job_label], "balance_exporter");
}

// ---------------------------------------------------------------------------------------------
// systemd.

/// `Key=Value` lines of the unit's [Service] section.
fn service_section(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            out.push((key.to_owned(), value.to_owned()));
        }
    }
    out
}

const UNIT: &str = "deploy/systemd/balance_exporter.service";
const CREDENTIALS: &str = "/run/credentials/balance_exporter.service";

#[test]
fn systemd_unit_is_sandboxed_and_reloads_with_sighup() {
    let service = service_section(&text(UNIT));
    let value = |key: &str| {
        let values: Vec<&str> = service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values.len(), 1, "{key}= once in {UNIT}");
        values[0].to_owned()
    };
    for (key, expected) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(value(key), expected, "{key}=");
    }
    assert!(value("ExecStart").starts_with("/usr/local/bin/balance_exporter "));
}

#[test]
fn systemd_example_config_passes_config_check_with_the_units_credentials() {
    let unit = text(UNIT);
    let loaded: BTreeSet<String> = service_section(&unit)
        .into_iter()
        .filter(|(k, _)| k == "LoadCredential")
        .map(|(_, v)| {
            v.split_once(':')
                .unwrap_or_else(|| panic!("LoadCredential={v}: expected name:path"))
                .0
                .to_owned()
        })
        .collect();
    let exec_start = service_section(&unit)
        .into_iter()
        .find(|(k, _)| k == "ExecStart")
        .expect("ExecStart")
        .1;
    assert!(
        exec_start.contains("--config.file=/etc/balance_exporter/balance_exporter.yml"),
        "the unit reads the example's installed path: {exec_start}"
    );
    let needed =
        assert_example_config_checks(&text("deploy/systemd/balance_exporter.yml"), CREDENTIALS);
    assert_eq!(
        needed, loaded,
        "every credential the config reads is loaded by the unit, and no other"
    );
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(systemd_analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let unit = text(UNIT).replace(
        "ExecStart=/usr/local/bin/balance_exporter",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_balance_exporter")),
    );
    let scratch = TempDir::new("deploy-unit");
    let path = scratch.write("balance_exporter.service", &unit);
    let out = run_in(
        &systemd_analyze,
        &["verify", path.to_str().expect("UTF-8")],
        &scratch.0,
    );
    // verify exits 0 even for unknown keys, which it only reports: any output is a finding.
    assert_silent_success(&out, "systemd-analyze verify");
}

// ---------------------------------------------------------------------------------------------
// Docker and compose.

/// The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let text = text("deploy/docker/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if let Some((instruction, args)) = current.split_once(char::is_whitespace) {
                    out.push((instruction.to_uppercase(), args.trim().to_owned()));
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn dockerfile_runs_the_binary_unprivileged_on_the_default_port() {
    let all = dockerfile();
    let stages: Vec<usize> = (0..all.len()).filter(|&i| all[i].0 == "FROM").collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    assert!(
        all.iter()
            .any(|(i, a)| i == "RUN" && a.contains("cargo build --release --locked")),
        "the build uses Cargo.lock"
    );
    let last = &all[stages[stages.len() - 1]..];
    let one = |instruction: &str| -> String {
        let found: Vec<&String> = last
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(found.len(), 1, "{instruction} once in the final stage");
        found[0].clone()
    };
    assert_eq!(one("EXPOSE"), DEFAULT_PORT.to_string());
    let user = one("USER");
    let uid = user.split(':').next().expect("uid");
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid > 0),
        "USER is a numeric non-root uid (Kubernetes' runAsNonRoot can check it): {user}"
    );
    // Exec form: no shell is needed (nor present) to start the binary.
    let entrypoint: Vec<String> = serde_json::from_str(&one("ENTRYPOINT")).expect("JSON array");
    assert_eq!(entrypoint, ["/usr/local/bin/balance_exporter"]);
    let cmd: Vec<String> = serde_json::from_str(&one("CMD")).expect("JSON array");
    assert_eq!(
        cmd,
        ["--config.file=/etc/balance_exporter/balance_exporter.yml"]
    );

    let ignored: BTreeSet<String> = text(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for path in [".git", "target", "grafana/schema-check/node_modules"] {
        assert!(ignored.contains(path), ".dockerignore leaves out {path}");
    }
}

/// `(host path relative to deploy/, container path)` of a compose service's bind mounts.
fn binds(service: &Value) -> Vec<(String, String)> {
    seq_of(&service["volumes"], "volumes")
        .iter()
        .map(|v| {
            let mut parts = str_of(v, "volume").split(':');
            let host = parts.next().expect("host path").to_owned();
            let container = parts.next().expect("container path").to_owned();
            (host, container)
        })
        .collect()
}

#[test]
fn compose_file_wires_the_demo_prometheus_alertmanager_and_grafana() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = &compose["services"];
    let deploy = repo().join("deploy");

    let exporter = &services["exporter"];
    assert!(seq_of(&exporter["command"], "command").contains(&Value::from("--demo")));
    let context = deploy.join(str_of(&exporter["build"]["context"], "build.context"));
    let dockerfile = str_of(&exporter["build"]["dockerfile"], "build.dockerfile");
    assert!(context.join(dockerfile).is_file(), "{dockerfile} exists");
    assert_eq!(
        seq_of(&exporter["ports"], "ports")[0],
        format!("{DEFAULT_PORT}:{DEFAULT_PORT}")
    );

    for name in ["prometheus", "alertmanager", "grafana"] {
        for (host, _) in binds(&services[name]) {
            assert!(deploy.join(&host).exists(), "{name}: {host} exists");
        }
    }

    // Prometheus: the config it is started with, the rule file beside it, compose's host names.
    let prometheus = binds(&services["prometheus"]);
    let mounted = |container: &str| {
        prometheus
            .iter()
            .find(|(_, c)| c == container)
            .map(|(h, _)| h.clone())
            .unwrap_or_else(|| panic!("nothing mounted at {container}"))
    };
    let config_file = "/etc/prometheus/prometheus.yml";
    assert!(
        seq_of(&services["prometheus"]["command"], "command")
            .contains(&Value::from(format!("--config.file={config_file}")))
    );
    let config_host = mounted(config_file);
    let config = yaml(&format!("deploy/{}", config_host.trim_start_matches("./")));
    for rule_file in seq_of(&config["rule_files"], "rule_files") {
        let host = mounted(&format!(
            "/etc/prometheus/{}",
            str_of(rule_file, "rule file")
        ));
        assert_eq!(host, "./prometheus/alerts.yml");
    }
    let job = &seq_of(&config["scrape_configs"], "scrape_configs")[0];
    assert_eq!(job["job_name"], "balance_exporter");
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!("exporter:{DEFAULT_PORT}")
    );
    assert_eq!(
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "alertmanager:9093"
    );

    // Grafana: provisioning from grafana/, its data source pointed at the prometheus service,
    // the dashboards where the dashboard provider looks for them.
    let grafana = &services["grafana"];
    let grafana_binds = binds(grafana);
    assert!(grafana_binds.contains(&(
        "../grafana/provisioning".to_owned(),
        "/etc/grafana/provisioning".to_owned()
    )));
    let sources = yaml("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(sources["datasources"][0]["url"], "${PROMETHEUS_URL}");
    assert_eq!(
        grafana["environment"]["PROMETHEUS_URL"],
        "http://prometheus:9090"
    );
    let providers = yaml("grafana/provisioning/dashboards/balance-exporter.yml");
    let dashboards_path = str_of(&providers["providers"][0]["options"]["path"], "path");
    assert!(grafana_binds.contains(&(
        "../grafana/dashboards".to_owned(),
        dashboards_path.to_owned()
    )));
}

#[test]
fn compose_alertmanager_routes_like_the_example() {
    let example = yaml("deploy/alertmanager/alertmanager.yml");
    let compose = yaml("deploy/compose/alertmanager.yml");
    for key in ["route", "inhibit_rules"] {
        assert!(
            compose[key] == example[key],
            "{key} differs from the example's"
        );
    }
    let names = |config: &Value| -> Vec<Value> {
        seq_of(&config["receivers"], "receivers")
            .iter()
            .map(|r| r["name"].clone())
            .collect()
    };
    assert_eq!(names(&compose), names(&example));
}

#[test]
fn compose_prometheus_and_alertmanager_configs_pass_their_tools() {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    // The rule file sits beside the config in the container, as here.
    let scratch = TempDir::new("deploy-prometheus");
    scratch.write("prometheus.yml", &text("deploy/compose/prometheus.yml"));
    scratch.write("alerts.yml", &text("deploy/prometheus/alerts.yml"));
    let out = run_in(
        &promtool,
        &["check", "config", "prometheus.yml"],
        &scratch.0,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let Some(amtool) = tool("amtool", "prometheus-alertmanager") else {
        return;
    };
    let out = run_in(
        &amtool,
        &["check-config", "alertmanager.yml"],
        &repo().join("deploy/compose"),
    );
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn docker_compose_config_accepts_the_compose_file() {
    let Some(compose) = tool("docker-compose", "docker-compose") else {
        return;
    };
    // Validates the file against the compose schema and resolves every path; no engine needed.
    let out = run_in(
        &compose,
        &["--file", "docker-compose.yml", "config", "--quiet"],
        &repo().join("deploy"),
    );
    assert!(out.status.success(), "{}", describe(&out));
}
