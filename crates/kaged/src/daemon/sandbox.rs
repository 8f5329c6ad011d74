//! Start-up step 9: what this daemon warns about on every response (no authentication, no
//! sandbox), and the sandbox: the preflight of `kaged doctor`, and the private copy of this
//! binary every cage binds.

use kaged_auth::Mechanism;
use kaged_config::{SandboxMode, Settings};
use kaged_server::SandboxState;
use kaged_spawn::HelperCopy;

/// The warnings of `kaged status` and the console, and the `X-Kaged-Warning` values.
#[derive(Default)]
pub(super) struct Warnings {
    pub(super) texts: Vec<String>,
    pub(super) headers: Vec<&'static str>,
}

impl Warnings {
    fn add(&mut self, text: String, header: Option<&'static str>) {
        self.texts.push(text);
        self.headers.extend(header);
    }
}

/// The warnings of a sign-in without credentials, logged once as they are added.
pub(super) fn auth_warnings(mechanism: &Mechanism, base: &str) -> Warnings {
    let mut warnings = Warnings::default();
    if let Mechanism::InsecureReadonly = mechanism {
        tracing::warn!(
            "--insecure-readonly: anyone who can reach {base} may read without credentials"
        );
        warnings.add(
            "insecure-readonly: reads need no authentication (--insecure-readonly)".to_string(),
            Some("insecure-readonly"),
        );
    }
    if let Mechanism::Insecure = mechanism {
        tracing::warn!(
            "--insecure: NO AUTHENTICATION; anyone who can reach {base} controls this kaged"
        );
        warnings.add(
            "insecure: authentication is off (--insecure)".to_string(),
            Some("insecure"),
        );
    }
    warnings
}

/// What the sandbox can do here. The helper copy, when made, is removed when it is dropped:
/// keep it until the daemon stopped (after its runs ended).
pub(super) async fn prepare(
    settings: &Settings,
    warnings: &mut Warnings,
) -> (SandboxState, Option<HelperCopy>) {
    let mut sandbox = SandboxState::default();
    if settings.sandbox_mode == SandboxMode::Disabled {
        tracing::warn!("the sandbox is disabled: work will run uncaged as this user");
        warnings.add(
            "no-sandbox: work runs without a sandbox".to_string(),
            Some("no-sandbox"),
        );
        return (sandbox, None);
    }
    // The preflight of `kaged doctor`: caged work is refused (never run uncaged) when a cage
    // cannot be built here.
    let checks = tokio::task::spawn_blocking(kaged_spawn::preflight)
        .await
        .unwrap_or_default();
    for check in &checks {
        match &check.outcome {
            Ok(detail) => tracing::info!(check = check.name, "{detail}"),
            Err(problem) => tracing::warn!(
                check = check.name,
                fix = check.fix.as_deref().unwrap_or(""),
                "{problem}"
            ),
        }
    }
    sandbox.problem = kaged_spawn::sandbox_problem(&checks);
    sandbox.limits = checks
        .iter()
        .find(|c| c.name == "limits")
        .map(|c| match &c.outcome {
            Ok(d) | Err(d) => d.clone(),
        });
    let mut helper_copy = None;
    if sandbox.problem.is_none() {
        helper_copy = copy_helper().await;
        sandbox.helper = helper_copy.as_ref().map(|c| c.path().to_path_buf());
    }
    if let Some(problem) = &sandbox.problem {
        eprintln!(
            "kaged: warning: no cage can be built on this host ({problem}); caged work will be refused until it is fixed: run `kaged doctor`"
        );
        warnings.add(
            format!("sandbox-unavailable: {problem}; caged work is refused (kaged doctor)"),
            None,
        );
    }
    (sandbox, helper_copy)
}

/// Cages bind this copy, not the binary on disk: an upgrade that replaces the file leaves
/// running daemons able to start runs.
async fn copy_helper() -> Option<HelperCopy> {
    let root = kaged_spawn::effective_uid() == 0;
    match tokio::task::spawn_blocking(move || HelperCopy::create(root)).await {
        Ok(Ok(copy)) => {
            tracing::info!(path = %copy.path().display(), "cages bind a private copy of this binary");
            Some(copy)
        }
        Ok(Err(e)) => {
            tracing::warn!(
                error = %e,
                "cannot keep a private copy of this binary; cages bind it from /proc/self/exe, so replacing it on disk stops new runs until kaged restarts"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a private copy of this binary");
            None
        }
    }
}
