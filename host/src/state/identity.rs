//! Who created a release: the user and host, and the CI run when there is one, read from the
//! variables each CI system sets (spec/state.md, "created_by").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who created a release. Records of the Go tool and of versions before this field have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `$USER`, else `$LOGNAME`, else `uid <n>`.
    pub user: String,
    /// The machine's host name.
    pub host: String,
    /// The CI run that ran the command, when one of the known systems did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<CiRun>,
    /// Fields we do not know, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A CI run, as its system describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiRun {
    /// `github-actions`, `gitlab-ci`, `buildkite`, `jenkins` or `circleci`.
    pub system: String,
    /// The run's (or job's) page, when the system says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who started the run, when the system says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Identity {
    /// This process's user and host, and its CI run.
    pub fn current() -> Identity {
        Identity {
            user: super::user_name(),
            host: super::host_name(),
            ci: CiRun::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty())),
            extra: Map::new(),
        }
    }
}

impl std::fmt::Display for Identity {
    /// `alice on build-7`, then ` (github-actions https://…, by octocat)` for a CI run.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}", self.user, self.host)?;
        if let Some(ci) = &self.ci {
            write!(f, " ({}", ci.system)?;
            if let Some(url) = &ci.url {
                write!(f, " {url}")?;
            }
            if let Some(actor) = &ci.actor {
                write!(f, ", by {actor}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl CiRun {
    /// The run described by the variables `var` reads, if a known CI system set them.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<CiRun> {
        let run = |system: &str, url: Option<String>, actor: Option<String>| CiRun {
            system: system.to_string(),
            url,
            actor,
            extra: Map::new(),
        };
        if var("GITHUB_ACTIONS").as_deref() == Some("true") {
            let url = match (
                var("GITHUB_SERVER_URL"),
                var("GITHUB_REPOSITORY"),
                var("GITHUB_RUN_ID"),
            ) {
                (Some(server), Some(repo), Some(id)) => {
                    Some(format!("{server}/{repo}/actions/runs/{id}"))
                }
                _ => None,
            };
            return Some(run("github-actions", url, var("GITHUB_ACTOR")));
        }
        if var("GITLAB_CI").as_deref() == Some("true") {
            let url = var("CI_JOB_URL").or_else(|| var("CI_PIPELINE_URL"));
            return Some(run("gitlab-ci", url, var("GITLAB_USER_LOGIN")));
        }
        if var("BUILDKITE").as_deref() == Some("true") {
            let url = var("BUILDKITE_BUILD_URL");
            return Some(run("buildkite", url, var("BUILDKITE_BUILD_CREATOR")));
        }
        if var("CIRCLECI").as_deref() == Some("true") {
            return Some(run(
                "circleci",
                var("CIRCLE_BUILD_URL"),
                var("CIRCLE_USERNAME"),
            ));
        }
        if var("JENKINS_URL").is_some() {
            // The user is only known with the Build User Vars plugin.
            return Some(run("jenkins", var("BUILD_URL"), var("BUILD_USER_ID")));
        }
        None
    }
}

/// The CI variables [`CiRun::from_vars`] reads: a test that wants no CI run removes these.
pub const CI_VARIABLES: &[&str] = &[
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "CIRCLECI",
    "JENKINS_URL",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Option<CiRun> {
        CiRun::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_ci_system_is_told_by_its_own_variables() {
        let gh = from(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_ACTOR", "octocat"),
        ])
        .unwrap();
        assert_eq!(gh.system, "github-actions");
        assert_eq!(
            gh.url.as_deref(),
            Some("https://github.com/acme/shop/actions/runs/42")
        );
        assert_eq!(gh.actor.as_deref(), Some("octocat"));
        let gl = from(&[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_URL", "https://gitlab.example/p/1"),
        ])
        .unwrap();
        assert_eq!(
            (gl.system.as_str(), gl.url.as_deref()),
            ("gitlab-ci", Some("https://gitlab.example/p/1"))
        );
        assert_eq!(gl.actor, None);
        for (var, value, system) in [
            ("BUILDKITE", "true", "buildkite"),
            ("CIRCLECI", "true", "circleci"),
            ("JENKINS_URL", "https://ci.example/", "jenkins"),
        ] {
            assert_eq!(from(&[(var, value)]).unwrap().system, system);
        }
        // A generic CI=true names no system, and nothing set is no CI run.
        assert_eq!(from(&[("CI", "true")]), None);
        assert_eq!(from(&[]), None);
    }

    #[test]
    fn an_identity_reads_back_with_fields_it_does_not_know() {
        let text = r#"{"user":"a","host":"h","ci":{"system":"x","later":1},"team":"t"}"#;
        let identity: Identity = serde_json::from_str(text).unwrap();
        assert_eq!(identity.to_string(), "a on h (x)");
        assert_eq!(serde_json::to_string(&identity).unwrap(), text);
    }
}
