//! `kaged-acp-scripted SCRIPT.json`: a scripted ACP agent on stdio for kaged's tests (the script
//! format is in the `kaged_acp_testing` crate docs). The script path may also come from
//! `KAGED_ACP_SCRIPT`. Exit status 2: no script or a bad one.

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let path = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("KAGED_ACP_SCRIPT"))
        .map(PathBuf::from);
    let Some(path) = path else {
        eprintln!("usage: kaged-acp-scripted SCRIPT.json (or KAGED_ACP_SCRIPT=SCRIPT.json)");
        return std::process::ExitCode::from(2);
    };
    let script = match kaged_acp_testing::Script::load(&path) {
        Ok(script) => script,
        Err(e) => {
            eprintln!("kaged-acp-scripted: bad script {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match kaged_acp_testing::agent::serve(script).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kaged-acp-scripted: connection failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
