use super::*;

fn parse_ok(text: &str) -> Manifest {
    let root = tempfile::tempdir().unwrap();
    parse(text, Path::new("stagecraft.toml"), root.path()).unwrap()
}

fn parse_err(text: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let err = parse(text, Path::new("stagecraft.toml"), root.path()).unwrap_err();
    assert!(
        err.is::<crate::error::InputError>(),
        "not an input error: {err:#}"
    );
    format!("{err:#}")
}

#[test]
fn minimal_manifest_uses_the_canonical_pipeline_and_file_state() {
    let m = parse_ok("[environments.prod]\n");
    assert_eq!(m.pipeline, CANONICAL_PHASES.map(String::from).to_vec());
    assert!(m.phases.is_empty());
    assert_eq!(m.state, StateBackend::File);
    assert!(m.environments["prod"].vars.is_empty());
}

#[test]
fn full_phase_parses_limits_and_resolves_grants() {
    let m = parse_ok(
        r#"
[environments.staging]
vars = { url = "http://127.0.0.1:8080" }

[phases.build]
plugin = "builtin:exec"
config = { command = "make dist VERSION={{version}}" }
timeout = "90s"
memory = "64MiB"
[phases.build.grants]
exec = ["make"]
read = ["."]
write = ["dist/../out"]
env = ["HOME"]
"#,
    );
    let build = &m.phases["build"];
    assert_eq!(build.source, PluginSource::Builtin("exec".into()));
    assert_eq!(build.limits.timeout, std::time::Duration::from_secs(90));
    assert_eq!(build.limits.timeout_text, "90s");
    assert_eq!(build.limits.memory_bytes, 64 << 20);
    assert_eq!(build.grants.exec, ["make"]);
    assert_eq!(build.grants.env, ["HOME"]);
    assert_eq!(build.grants.read, std::slice::from_ref(&m.project_root));
    assert_eq!(build.grants.write, [m.project_root.join("out")]);
    assert_eq!(
        m.environments["staging"].vars["url"],
        "http://127.0.0.1:8080"
    );
}

#[test]
fn unknown_key_points_at_its_line() {
    let msg = parse_err(
        "[environments.prod]\n\n[phases.build]\nplugin = \"builtin:noop\"\ntimout = \"1s\"\n",
    );
    assert!(
        msg.starts_with("stagecraft.toml:5:1: phases.build.timout: unknown field `timout`"),
        "{msg}"
    );
    assert!(msg.contains("docs/manifest.md"), "{msg}");
}

#[test]
fn unknown_phase_names_the_pipeline() {
    let msg = parse_err("[environments.prod]\n[phases.deploy]\nplugin = \"builtin:noop\"\n");
    assert!(
        msg.starts_with("stagecraft.toml:2:9: unknown phase \"deploy\""),
        "{msg}"
    );
    assert!(
        msg.contains("build, push, migrate_pre, rollout, migrate_post, finalize"),
        "{msg}"
    );
    assert!(
        !msg.contains("Did you mean"),
        "nothing is close to deploy: {msg}"
    );
    let msg = parse_err("[environments.prod]\n[phases.biuld]\nplugin = \"builtin:noop\"\n");
    assert!(
        msg.ends_with(", or fix the name). Did you mean \"build\"?"),
        "{msg}"
    );
}

#[test]
fn custom_pipeline_orders_phases_and_checks_names() {
    let m = parse_ok("[environments.prod]\n[pipeline]\nphases = [\"compile\", \"ship\"]\n[phases.ship]\nplugin = \"builtin:noop\"\n");
    assert_eq!(m.pipeline, ["compile", "ship"]);
    let msg = parse_err("[environments.prod]\n[pipeline]\nphases = [\"ok\", \"Bad-Name\"]\n");
    assert!(
        msg.contains("stagecraft.toml:3:17: invalid phase name \"Bad-Name\""),
        "{msg}"
    );
    let msg = parse_err("[environments.prod]\n[pipeline]\nphases = [\"a\", \"a\"]\n");
    assert!(msg.contains("listed twice"), "{msg}");
}

#[test]
fn bad_values_are_refused_with_positions() {
    let base = "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\n";
    let msg = parse_err(&format!("{base}timeout = \"soon\"\n"));
    assert!(
        msg.starts_with("stagecraft.toml:4:11: timeout: \"soon\" is not a duration"),
        "{msg}"
    );
    let msg = parse_err(&format!("{base}memory = \"lots\"\n"));
    assert!(
        msg.starts_with("stagecraft.toml:4:10: memory: \"lots\" is not a size"),
        "{msg}"
    );
    let msg = parse_err(&format!(
        "{base}[phases.build.grants]\nwrite = [\"../elsewhere\"]\n"
    ));
    assert!(
        msg.contains("stagecraft.toml:5:10: write grant \"../elsewhere\": climbs out"),
        "{msg}"
    );
    let msg = parse_err(&format!(
        "{base}[phases.build.grants]\nexec = [\"/bin/sh\"]\n"
    ));
    assert!(msg.contains("must be a program name"), "{msg}");
    let msg = parse_err("[environments.prod]\n[phases.build]\nplugin = \"builtin:nope\"\n");
    assert!(
        msg.contains("stagecraft.toml:3:10: unknown built-in plugin \"builtin:nope\""),
        "{msg}"
    );
    let msg = parse_err("[environments.prod]\n[phases.build]\nplugin = \"plugins/missing.wasm\"\n");
    assert!(
        msg.contains("plugin file \"plugins/missing.wasm\" not found"),
        "{msg}"
    );
    let msg = parse_err("[environments.Prod]\n");
    assert!(msg.contains("invalid environment name \"Prod\""), "{msg}");
    // The rule leases and transactions apply, caught where the name is written: a name the
    // manifest accepted used to fail every deploy at the lease.
    let msg = parse_err("[environments.2prod]\n");
    assert!(
        msg.contains(
            "stagecraft.toml:1:15: invalid environment name \"2prod\": names are a \
             lowercase letter followed by"
        ),
        "{msg}"
    );
    let msg = parse_err("[phases.build]\nplugin = \"builtin:noop\"\n");
    assert!(msg.contains("no environments defined"), "{msg}");
    let msg = parse_err("[environments.prod\n");
    assert!(msg.starts_with("stagecraft.toml:1:"), "{msg}");
}

#[test]
fn state_backend_choice() {
    let m = parse_ok("[environments.prod]\n[state]\nbackend = \"postgres\"\n");
    assert_eq!(
        m.state,
        StateBackend::Postgres {
            url_env: "STAGECRAFT_DATABASE_URL".into()
        }
    );
    let m = parse_ok("[environments.prod]\n[state]\nbackend = \"postgres\"\nurl_env = \"DB\"\n");
    assert_eq!(
        m.state,
        StateBackend::Postgres {
            url_env: "DB".into()
        }
    );
    let msg = parse_err("[environments.prod]\n[state]\nbackend = \"redis\"\n");
    assert!(msg.contains("unknown state backend \"redis\""), "{msg}");
}

#[test]
fn a_type_error_names_the_key_it_is_about() {
    let msg = parse_err(
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\ntimeout = 600\n",
    );
    assert!(
        msg.starts_with("stagecraft.toml:4:11: phases.build.timeout: invalid type: integer `600`"),
        "{msg}"
    );
    let msg = parse_err(
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\n\
         [phases.build.grants]\nread = \"data\"\n",
    );
    assert!(
        msg.starts_with("stagecraft.toml:5:8: phases.build.grants.read: invalid type: string"),
        "{msg}"
    );
}

/// A table given as a plain value says what table is expected, in the manifest's own words,
/// never the name of a type inside stagecraft.
#[test]
fn a_table_of_the_wrong_type_is_described_in_manifest_terms() {
    let msg = parse_err("pipeline = 3\n[environments.prod]\n");
    assert_eq!(
        msg,
        "stagecraft.toml:1:12: pipeline: invalid type: integer `3`, expected a [pipeline] table \
         with phases = [\"build\", \"rollout\", ...]"
    );
    for text in [
        "pipeline = 3\n[environments.prod]\n",
        "state = \"postgres\"\n[environments.prod]\n",
        "[environments]\nprod = 1\n",
        "[environments.prod]\n[phases]\nbuild = \"builtin:noop\"\n",
        "[environments.prod]\n[phases.build]\nplugin = \"builtin:noop\"\ngrants = 1\n",
    ] {
        let msg = parse_err(text);
        assert!(msg.contains("expected a"), "{text:?}: {msg}");
        assert!(
            !msg.contains("Raw") && !msg.contains("struct"),
            "{text:?}: {msg}"
        );
    }
}

#[test]
fn key_paths_are_read_from_the_header_and_the_line() {
    let text = "top = 1\n[state]\nhistory_max = \"x\"\n[[odd]]\n  a.b = 2\n";
    let at = |needle: &str| super::key_path_at(text, text.find(needle).unwrap());
    assert_eq!(at("1").as_deref(), Some("top"));
    assert_eq!(at("\"x\"").as_deref(), Some("state.history_max"));
    assert_eq!(at("state]").as_deref(), Some("state"));
    assert_eq!(at("2").as_deref(), Some("odd.a.b"));
}

#[test]
fn a_read_grant_that_does_not_exist_is_refused_unless_an_earlier_phase_may_write_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("site")).unwrap();
    let parse_in = |text: &str| parse(text, Path::new("stagecraft.toml"), root.path());
    let phases = |read: &str| {
        format!(
            "[environments.prod]\n\
             [phases.build]\nplugin = \"builtin:noop\"\n\
             [phases.build.grants]\nread = [\"site\"]\nwrite = [\"dist\"]\n\
             [phases.push]\nplugin = \"builtin:noop\"\n\
             [phases.push.grants]\nread = [\"{read}\"]\n"
        )
    };
    // Written by an earlier phase (or inside what it writes): fine before it exists.
    assert!(parse_in(&phases("dist")).is_ok());
    assert!(parse_in(&phases("dist/app.tar")).is_ok());
    // Nothing writes it: said at load, at the grant.
    let err = format!("{:#}", parse_in(&phases("asets")).unwrap_err());
    assert!(
        err.starts_with("stagecraft.toml:10:9: read grant ")
            && err.contains("asets of phase push does not exist, and no write grant"),
        "{err}"
    );
}

#[test]
fn net_grants_parse_to_origins_and_a_bad_one_points_at_its_line() {
    let m = parse_ok(
        r#"
[environments.prod]
[phases.rollout]
plugin = "builtin:noop"
[phases.rollout.grants]
net = ["https://registry.example.com", "http://127.0.0.1:8080", "https://*.example.net", "https://registry.example.com:443"]
"#,
    );
    let net: Vec<String> = m.phases["rollout"]
        .grants
        .net
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        net,
        [
            "https://registry.example.com:443",
            "http://127.0.0.1:8080",
            "https://*.example.net:443"
        ]
    );
    let msg = parse_err(
        "[environments.prod]\n[phases.rollout]\nplugin = \"builtin:noop\"\n\
         [phases.rollout.grants]\nnet = [\"https://*.com\"]\n",
    );
    assert!(
        msg.starts_with("stagecraft.toml:5:8: net grant \"https://*.com\": *.com would grant"),
        "{msg}"
    );
}
