//! Prepares the web console for `src/ui.rs` to embed:
//! - the console's own files: every `.js` and `.css` file in `ui/` becomes a row of the table
//!   `OUT_DIR/console_files.rs` (served under `/assets/`), so adding a module needs no list kept
//!   by hand;
//! - its third-party code (xterm.js and its fit addon), fetched into `OUT_DIR/vendor/`.
//!
//! What is fetched is pinned by `ui/package-lock.json` (npm lockfile v3): for each package the
//! tarball at its `resolved` URL, which must be on <https://registry.npmjs.org/>, is downloaded
//! and its SHA-512 is checked against the lockfile's `integrity` *before* anything is unpacked.
//! Only the files the UI serves are taken out of it. Tarballs are cached under `OUT_DIR/npm/`, so
//! a rebuild does not download again; the script reruns only when `ui/`, this file or
//! `KAGED_UI_VENDOR_DIR` change. Node and npm are not needed to build (only to change versions:
//! see `ui/README.md`).
//!
//! Offline builds: set `KAGED_UI_VENDOR_DIR` to an absolute path holding either
//! - the registry tarballs, named as the last segment of their `resolved` URL
//!   (`xterm-6.0.0.tgz`, `addon-fit-0.11.0.tgz`): checked against the lockfile like downloads; or
//! - the served files themselves (`xterm.js`, `xterm.css`, `addon-fit.js`), e.g. from a distro
//!   package: copied as they are and NOT checked (whoever provides them vouches for them); the
//!   build says so in a warning.
//!
//! Normal builds print nothing; a failure names what failed and how to build offline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use ureq::tls::{RootCerts, TlsConfig};

/// The web console's folder: its own source (HTML, CSS, JavaScript modules) and the npm pins.
const CONSOLE_DIR: &str = "ui";
const LOCKFILE: &str = "ui/package-lock.json";
const REGISTRY: &str = "https://registry.npmjs.org/";
const VENDOR_ENV: &str = "KAGED_UI_VENDOR_DIR";
/// No tarball we use comes near this; a larger answer is refused rather than buffered.
const MAX_TARBALL_BYTES: u64 = 32 * 1024 * 1024;

/// The files the UI serves: (package, path inside its tarball, name under `OUT_DIR/vendor/`).
const FILES: &[(&str, &str, &str)] = &[
    ("@xterm/xterm", "package/lib/xterm.js", "xterm.js"),
    ("@xterm/xterm", "package/css/xterm.css", "xterm.css"),
    (
        "@xterm/addon-fit",
        "package/lib/addon-fit.js",
        "addon-fit.js",
    ),
];

/// Content types of the console's files served under `/assets/`, by extension.
const SERVED_TYPES: &[(&str, &str)] = &[
    ("js", "text/javascript; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
];
/// Files of `ui/` that are not served under `/assets/`: the page itself (served at `/`), the
/// service worker (served at `/sw.js`: a worker's scope is its own folder or below), and what
/// only the build and people read.
const NOT_SERVED: &[&str] = &[
    "index.html",
    "sw.js",
    "README.md",
    "package.json",
    "package-lock.json",
];

const OFFLINE_HELP: &str = "To build without network access, put the tarballs named in \
crates/kaged-server/ui/package-lock.json (`resolved`) in a directory, or the files xterm.js, \
xterm.css and addon-fit.js, and set KAGED_UI_VENDOR_DIR=/absolute/path/to/it \
(see crates/kaged-server/ui/README.md).";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A directory: Cargo watches every file below it, so a new module reruns this script.
    println!("cargo:rerun-if-changed={CONSOLE_DIR}");
    println!("cargo:rerun-if-changed={LOCKFILE}");
    println!("cargo:rerun-if-env-changed={VENDOR_ENV}");
    if let Err(message) = console_table().and_then(|()| run()) {
        for line in message.lines() {
            println!("cargo:warning={line}");
        }
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// Write `OUT_DIR/console_files.rs`: `CONSOLE_FILES`, one `(name, content type, bytes)` row per
/// served file of `ui/`, sorted by name. The folder is flat because `/assets/{file}` is one path
/// segment; a subdirectory or a file of unknown type fails the build rather than go unserved.
fn console_table() -> Result<(), String> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?;
    let dir = PathBuf::from(manifest_dir).join(CONSOLE_DIR);
    let entries = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut rows = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| format!("{}: the file name {name:?} is not UTF-8", dir.display()))?;
        // Editors' and npm's leftovers (`.app.js.swp`, `app.js~`, `node_modules/`) are nobody's
        // web code.
        let leftover = name.starts_with('.') || name.ends_with('~') || name == "node_modules";
        if leftover || NOT_SERVED.contains(&name.as_str()) {
            continue;
        }
        if !path.is_file() {
            return Err(format!(
                "{}: the console's folder is flat (its files are served at /assets/{{file}}): move what is in this directory up into {CONSOLE_DIR}/",
                path.display()
            ));
        }
        let extension = name
            .rsplit_once('.')
            .map(|(_, ext)| ext)
            .unwrap_or_default();
        let content_type = SERVED_TYPES
            .iter()
            .find(|(ext, _)| *ext == extension)
            .map(|(_, content_type)| *content_type)
            .ok_or_else(|| {
                format!(
                    "{}: no content type for .{extension} files; add it to SERVED_TYPES (or the file to NOT_SERVED) in crates/kaged-server/build.rs",
                    path.display()
                )
            })?;
        let path = path
            .to_str()
            .ok_or_else(|| format!("{}: the path is not UTF-8", path.display()))?
            .to_string();
        rows.insert(name, (content_type, path));
    }
    let mut table = String::from(
        "/// The console's files served under `/assets/`: (name, content type, bytes). Generated by\n\
         /// `build.rs` from every `.js` and `.css` file in `crates/kaged-server/ui/`.\n\
         pub(crate) const CONSOLE_FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, (content_type, path)) in &rows {
        let _ = writeln!(
            table,
            "    ({name:?}, {content_type:?}, include_bytes!({path:?})),"
        );
    }
    table.push_str("];\n");
    let target = out.join("console_files.rs");
    fs::write(&target, table).map_err(|e| format!("writing {}: {e}", target.display()))
}

/// One package pinned by the lockfile.
struct Locked {
    name: String,
    version: String,
    url: String,
    /// The SHA-512 digests (base64) the lockfile accepts; at least one.
    sha512: Vec<String>,
}

impl Locked {
    fn tarball_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }
}

fn run() -> Result<(), String> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let vendor = out.join("vendor");
    fs::create_dir_all(&vendor).map_err(|e| format!("creating {}: {e}", vendor.display()))?;

    let local = std::env::var_os(VENDOR_ENV).filter(|v| !v.is_empty());
    let local = local.map(PathBuf::from);
    if let Some(dir) = &local {
        if !dir.is_absolute() {
            return Err(format!(
                "{VENDOR_ENV}={} is not an absolute path",
                dir.display()
            ));
        }
        if FILES.iter().all(|(_, _, name)| dir.join(name).is_file()) {
            return copy_unverified(dir, &vendor);
        }
    }

    let lock_text = fs::read_to_string(LOCKFILE).map_err(|e| format!("reading {LOCKFILE}: {e}"))?;
    let mut packages = BTreeMap::new();
    for (package, _, _) in FILES {
        if !packages.contains_key(package) {
            packages.insert(*package, locked(&lock_text, package)?);
        }
    }

    let cache = out.join("npm");
    fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let mut agents = Vec::new();
    for (package, pin) in &packages {
        let tarball = match &local {
            Some(dir) => from_dir(dir, pin)?,
            None => cached_or_download(&cache, pin, &mut agents)?,
        };
        let wanted: Vec<(&str, &str)> = FILES
            .iter()
            .filter(|(p, _, _)| p == package)
            .map(|(_, inner, name)| (*inner, *name))
            .collect();
        unpack(pin, &tarball, &wanted, &vendor)?;
    }
    Ok(())
}

/// `name`'s entry in a lockfile v3 `packages` map.
fn locked(lock_text: &str, name: &str) -> Result<Locked, String> {
    let lock: serde_json::Value =
        serde_json::from_str(lock_text).map_err(|e| format!("{LOCKFILE} is not JSON: {e}"))?;
    let version = lock.get("lockfileVersion").and_then(|v| v.as_u64());
    if !matches!(version, Some(2 | 3)) {
        return Err(format!(
            "{LOCKFILE}: lockfileVersion {version:?} is not supported (need 2 or 3: regenerate it with npm 7 or later)"
        ));
    }
    let entry = lock
        .get("packages")
        .and_then(|p| p.get(format!("node_modules/{name}")))
        .ok_or_else(|| {
            format!("{LOCKFILE} does not pin {name}: add it to ui/package.json and regenerate the lockfile")
        })?;
    let field = |key: &str| entry.get(key).and_then(|v| v.as_str());
    let version = field("version")
        .ok_or_else(|| format!("{LOCKFILE}: {name} has no version"))?
        .to_string();
    // npm leaves `resolved` out under `omit-lockfile-registry-resolved`; the registry URL is
    // then the default one, which is what we would insist on anyway.
    let basename = name.rsplit('/').next().unwrap_or(name);
    let expected_url = format!("{REGISTRY}{name}/-/{basename}-{version}.tgz");
    let url = field("resolved").unwrap_or(&expected_url).to_string();
    if !url.starts_with(REGISTRY) {
        return Err(format!(
            "{LOCKFILE}: {name} resolves to {url}; only {REGISTRY} is allowed"
        ));
    }
    if url != expected_url {
        return Err(format!(
            "{LOCKFILE}: {name}@{version} resolves to {url}, expected {expected_url}"
        ));
    }
    let integrity =
        field("integrity").ok_or_else(|| format!("{LOCKFILE}: {name} has no integrity hash"))?;
    let sha512: Vec<String> = integrity
        .split_whitespace()
        .filter_map(|h| h.strip_prefix("sha512-"))
        .map(|h| h.split('?').next().unwrap_or(h).to_string())
        .collect();
    if sha512.is_empty() {
        return Err(format!(
            "{LOCKFILE}: {name} has no sha512 integrity (found {integrity:?})"
        ));
    }
    Ok(Locked {
        name: name.to_string(),
        version,
        url,
        sha512,
    })
}

fn sha512_base64(bytes: &[u8]) -> String {
    BASE64.encode(Sha512::digest(bytes))
}

fn verify(pin: &Locked, bytes: &[u8], source: &str) -> Result<(), String> {
    let actual = sha512_base64(bytes);
    if pin.sha512.contains(&actual) {
        return Ok(());
    }
    Err(format!(
        "integrity check failed for {}@{} ({source}): expected sha512-{}, got sha512-{actual}. \
         Nothing was unpacked. If the lockfile is right, the download was tampered with or \
         corrupted; if you changed versions, regenerate crates/kaged-server/ui/package-lock.json \
         with npm.",
        pin.name,
        pin.version,
        pin.sha512.join(" or sha512-"),
    ))
}

fn from_dir(dir: &Path, pin: &Locked) -> Result<Vec<u8>, String> {
    let path = dir.join(pin.tarball_name());
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = fs::read(&path).map_err(|e| {
        format!(
            "{VENDOR_ENV}={}: cannot read {} for {}@{}: {e}. {OFFLINE_HELP}",
            dir.display(),
            path.display(),
            pin.name,
            pin.version
        )
    })?;
    verify(pin, &bytes, &path.display().to_string())?;
    Ok(bytes)
}

fn cached_or_download(
    cache: &Path,
    pin: &Locked,
    agents: &mut Vec<(&'static str, ureq::Agent)>,
) -> Result<Vec<u8>, String> {
    let path = cache.join(pin.tarball_name());
    if let Ok(bytes) = fs::read(&path) {
        if verify(pin, &bytes, "cache").is_ok() {
            return Ok(bytes);
        }
        // A stale or damaged cache entry: fetch it again.
        let _ = fs::remove_file(&path);
    }
    if agents.is_empty() {
        // The system's trust store first (TLS-inspecting proxies add their CA there), then
        // Mozilla's roots (machines without a CA bundle). Either way the bytes are only used
        // if their SHA-512 matches the lockfile.
        for (label, roots) in [
            ("system trust store", RootCerts::PlatformVerifier),
            ("Mozilla roots", RootCerts::WebPki),
        ] {
            let agent = ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_global(Some(Duration::from_secs(300)))
                .tls_config(TlsConfig::builder().root_certs(roots).build())
                .build()
                .into();
            agents.push((label, agent));
        }
    }
    let mut failures = Vec::new();
    let mut fetched = None;
    for (label, agent) in agents.iter() {
        let attempt = agent.get(&pin.url).call().and_then(|mut response| {
            response
                .body_mut()
                .with_config()
                .limit(MAX_TARBALL_BYTES)
                .read_to_vec()
        });
        match attempt {
            Ok(bytes) => {
                fetched = Some(bytes);
                break;
            }
            Err(e) => {
                let e = e.to_string();
                if !failures.iter().any(|(seen, _)| *seen == e) {
                    failures.push((e, *label));
                }
            }
        }
    }
    let proxy = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .find_map(|var| {
            Some(format!(
                " through the proxy {var}={}",
                std::env::var(var).ok()?
            ))
        })
        .unwrap_or_default();
    let bytes = fetched.ok_or_else(|| {
        format!(
            "downloading {}@{} from {}{proxy} failed: {}. The build fetches the web UI's \
             JavaScript from the npm registry (proxies: HTTPS_PROXY / NO_PROXY; extra CAs: \
             SSL_CERT_FILE). {OFFLINE_HELP}",
            pin.name,
            pin.version,
            pin.url,
            failures
                .iter()
                .map(|(e, label)| format!("{e} (TLS roots: {label})"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    verify(pin, &bytes, &pin.url)?;
    let partial = path.with_extension("tgz.partial");
    fs::write(&partial, &bytes)
        .and_then(|()| fs::rename(&partial, &path))
        .map_err(|e| format!("caching {}: {e}", path.display()))?;
    Ok(bytes)
}

/// Take `wanted` (path inside the tarball, output name) out of a verified tarball.
fn unpack(
    pin: &Locked,
    tarball: &[u8],
    wanted: &[(&str, &str)],
    vendor: &Path,
) -> Result<(), String> {
    let what = format!("{}@{}", pin.name, pin.version);
    let mut found: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let entries = archive
        .entries()
        .map_err(|e| format!("{what}: unreadable tarball: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{what}: unreadable tarball: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("{what}: bad path in tarball: {e}"))?
            .to_string_lossy()
            .into_owned();
        let Some((inner, _)) = wanted.iter().find(|(inner, _)| *inner == path) else {
            continue;
        };
        if !entry.header().entry_type().is_file() {
            return Err(format!(
                "{what}: {inner} is not a regular file in the tarball"
            ));
        }
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{what}: reading {inner}: {e}"))?;
        if found.insert(inner, bytes).is_some() {
            return Err(format!("{what}: {inner} appears twice in the tarball"));
        }
    }
    for (inner, name) in wanted {
        let bytes = found.get(inner).ok_or_else(|| {
            format!("{what} has no {inner}: the package layout changed; update FILES in crates/kaged-server/build.rs")
        })?;
        let target = vendor.join(name);
        fs::write(&target, bytes).map_err(|e| format!("writing {}: {e}", target.display()))?;
    }
    Ok(())
}

/// The escape hatch for packagers: served files handed over as they are.
fn copy_unverified(dir: &Path, vendor: &Path) -> Result<(), String> {
    let mut names = String::new();
    for (_, _, name) in FILES {
        let source = dir.join(name);
        println!("cargo:rerun-if-changed={}", source.display());
        fs::copy(&source, vendor.join(name))
            .map_err(|e| format!("{VENDOR_ENV}: copying {}: {e}", source.display()))?;
        let _ = write!(names, " {name}");
    }
    println!(
        "cargo:warning=web UI files{names} copied from {VENDOR_ENV}={} without an integrity check \
         (versions pinned in ui/package-lock.json are not enforced)",
        dir.display()
    );
    Ok(())
}
