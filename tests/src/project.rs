//! A project for end-to-end tests of the history: two environments (`prod`, `staging`), a
//! `build` phase that fails for version `bad`, on the file backend or on a PostgreSQL server of
//! its own.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::pg::PgServer;
use crate::{stagecraft, Run};

/// A project whose `build` fails for version `bad` (`test <version> != bad`), on the file backend
/// or on a PostgreSQL server of its own.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// The server and the URL of its database, for the PostgreSQL runs.
    pub postgres: Option<(PgServer, String)>,
}

pub const URL_VAR: &str = "STAGECRAFT_DATABASE_URL";

impl Project {
    pub fn file() -> Project {
        let project = Project {
            dir: tempfile::tempdir().unwrap(),
            postgres: None,
        };
        project.write_manifest("");
        project
    }

    pub fn postgres(db: &str) -> Project {
        let server = PgServer::start();
        let url = server.create_database(db);
        let project = Project {
            dir: tempfile::tempdir().unwrap(),
            postgres: Some((server, url)),
        };
        project.write_manifest("");
        project
    }

    /// The manifest, with `state` added to its `[state]` table.
    pub fn write_manifest(&self, state: &str) {
        let backend = if self.postgres.is_some() {
            "backend = \"postgres\"\n"
        } else {
            ""
        };
        std::fs::write(
            self.path().join("stagecraft.toml"),
            format!(
                "[environments.prod]\n[environments.staging]\n\
                 [phases.build]\nplugin = \"builtin:exec\"\n\
                 config = {{ command = \"test {{{{version}}}} != bad\" }}\n\
                 [phases.build.grants]\nexec = [\"test\"]\n\
                 [phases.finalize]\nplugin = \"builtin:noop\"\n\
                 [state]\n{backend}{state}"
            ),
        )
        .unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where its state is, as `--state-file`/`--state-url` and `StoreTarget::parse` take it:
    /// the default state file, or the database's URL.
    pub fn store_spec(&self) -> String {
        match &self.postgres {
            Some((_, url)) => url.clone(),
            None => self
                .path()
                .join(".stagecraft/releases.json")
                .to_str()
                .unwrap()
                .to_string(),
        }
    }

    /// `stagecraft` in the project, on its backend, for a test to add to.
    pub fn command(&self) -> Command {
        let mut cmd: Command = stagecraft(self.path());
        if let Some((_, url)) = &self.postgres {
            cmd.env(URL_VAR, url);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command().args(args).output().unwrap().into()
    }

    /// Deploy `version` to `env`; `bad` fails its build (exit 2), anything else completes.
    pub fn deploy(&self, env: &str, version: &str) -> Run {
        let out = self.run(&["deploy", "--env", env, "--version", version]);
        let expected = if version == "bad" { 2 } else { 0 };
        assert_eq!(out.code, expected, "deploy {version}: {out:?}");
        out
    }

    /// `env`'s releases as (id, version), newest first.
    pub fn releases(&self, env: &str) -> Vec<(String, String)> {
        let out = self.run(&["releases", "list", "--env", env, "--json"]);
        assert_eq!(out.code, 0, "{out:?}");
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["version"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}
