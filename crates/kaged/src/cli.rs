//! The command line (clap): every command, flag and help text of `kaged`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kaged_config::DeploymentMode;

#[derive(Parser, Debug)]
#[command(
    name = "kaged",
    version,
    about = "Supervise AI coding agents and terminals in sandboxes, from a browser.",
    long_about = "kaged is a self-hosted daemon: `kaged start` runs it and prints a one-time launch URL; \
                  the other commands talk to the running daemon: the local one (found through its \
                  runtime directory), or the one at KAGED_SERVER with the bearer token KAGED_AUTH_TOKEN.\n\n\
                  Exit codes: 0 success, 1 failure, 2 bad usage or configuration, 3 no daemon running."
)]
pub struct Cli {
    /// Deployment mode (default: detected; see `kaged start --help`).
    #[arg(long, global = true, value_enum)]
    pub mode: Option<ModeArg>,
    #[command(subcommand)]
    pub command: Command,
}

// Arguments several commands share, each defined once here and flattened where used.

// `--json`: machine-readable output instead of the table.
#[derive(Args, Copy, Clone, Debug)]
pub struct JsonOutput {
    #[arg(long)]
    pub json: bool,
}

// A loaded project, named by its slug or by its directory.
#[derive(Args, Clone, Debug)]
pub struct ProjectRef {
    /// The project's slug, or its directory.
    pub project: String,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum ModeArg {
    /// Per-user: the operator's own daemon under their UID, XDG paths.
    User,
    /// System-wide: a shared daemon as the `kaged` user, /etc/kaged and /var/lib/kaged.
    System,
}

impl From<ModeArg> for DeploymentMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::User => DeploymentMode::User,
            ModeArg::System => DeploymentMode::System,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground and print a launch URL.
    #[command(long_about = "Run the daemon in the foreground.\n\n\
        Mode detection, first match wins: --mode; KAGED_HOME set (per-user, all state under it); \
        running as root or as the user `kaged` (system-wide); an existing $XDG_DATA_HOME/kaged or \
        ~/.local/share/kaged (per-user); otherwise per-user.\n\n\
        Settings precedence: flags > KAGED_* environment > config file > defaults. On first \
        per-user launch the config file is written with every key documented.\n\n\
        Once listening, prints one line to stderr:\n  kaged: ready — launch URL: http://HOST:PORT/launch?token=TOKEN\n\
        SIGTERM or SIGINT stops it gracefully.")]
    Start(StartArgs),
    /// Stop the local daemon gracefully (as SIGTERM does) and wait until it has stopped.
    #[command(
        long_about = "Stop the local daemon gracefully and wait until it has stopped.\n\n\
        The daemon stops as on SIGTERM: terminals, command agents and tasks go on in their run \
        holders and the next `kaged start` takes them up (`[sessions] on_daemon_stop`; \
        --kill-runs ends them), other runs end (their viewers are told), in-flight requests \
        get 10 s. Only the local operator can do this (the CLI on the daemon's host, \
        as its user). Exits 0 when the daemon stopped or was not running, 1 when it is still \
        stopping after --timeout seconds."
    )]
    Stop {
        /// End the terminals, command agents and tasks too (by default they go on in their
        /// holders and the next start takes them up, unless `[sessions] on_daemon_stop = "kill"`).
        #[arg(long)]
        kill_runs: bool,
        /// Seconds to wait for the daemon to stop.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
    },
    /// Show the running daemon's mode, paths, bind address, auth mode, pid and uptime.
    #[command(mut_arg("json", |a| a.help("Print the daemon's full status document as JSON")))]
    Status {
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Launch URLs and the per-startup nonce.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Bearer tokens for scripts and remote CLIs (needs the local operator or the bootstrap token).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Projects registered with the running daemon.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Sessions: runs of agents, terminals and tasks on PTYs, live and resumable.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Tool calls of model agents waiting for a decision (`approval: ask` in the project
    /// file): list them, approve or deny one.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Speak the Agent Client Protocol on stdin/stdout as a kaged agent of PROJECT, for an
    /// editor: each ACP session is a kaged session of that agent, in its cage; kaged's
    /// approvals come as permission requests.
    Acp {
        /// The project (its slug).
        project: String,
        /// The agent (default: primary).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Run one command in an agent's cage, to try a policy before trusting an agent with it.
    #[command(subcommand)]
    Cage(CageCommand),
    /// The first process inside every cage: check that each bind is where it was meant to be
    /// (nothing swapped while bwrap built the cage), then run the command (kaged runs this).
    #[command(hide = true)]
    CageCheck {
        #[arg(long = "expect")]
        expect: Vec<String>,
        #[arg(long = "mount")]
        mount: Vec<String>,
        #[arg(long = "host-mount")]
        host_mount: Vec<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Inside a cage on a kaged PTY: take the terminal's foreground group, then run the
    /// command (kaged runs this itself).
    #[command(hide = true)]
    CageTty {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Inside a cage with a network allowlist: bridge 127.0.0.1 to kaged's egress proxy and run
    /// the command with the proxy variables set (kaged runs this itself).
    #[command(hide = true)]
    CageBridge {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        socket: std::path::PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Inside a model agent's cage: run tool calls read as JSON lines on stdin, one JSON
    /// reply line each on stdout, until stdin ends (kaged runs this itself; see kaged-tools).
    #[command(hide = true)]
    ToolExec {
        /// Run only these tools, comma-separated (empty: none; default: every built-in tool).
        #[arg(long)]
        tools: Option<String>,
    },
    /// Hold one run so it outlives the daemon: its terminal, transcript and limits, served on
    /// a private socket (kaged starts this itself; see kaged-holder and
    /// docs/holder-protocol.md).
    #[command(hide = true)]
    RunHolder {
        /// The descriptor holding the run's spec (JSON).
        #[arg(long)]
        spec_fd: i32,
        /// The descriptor to write the readiness line to.
        #[arg(long)]
        ready_fd: i32,
    },
    /// Inside an ACP agent's cage: run the agent on pipes and relay its JSON-RPC lines to and
    /// from stdin and stdout, serving its file and terminal requests in the cage (kaged runs
    /// this itself; see kaged-tools' acp module). Exits with the agent's exit code.
    #[command(hide = true)]
    AcpShim {
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Check that this host can build cages (bubblewrap, user namespaces) and say how to fix it.
    Doctor,
    /// kaged's database: copy it to another (SQLite ↔ PostgreSQL) or back it up.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Project files: validate them, print their JSON Schema.
    #[command(subcommand)]
    Dsl(DslCommand),
    /// Plugins: validate and install them, list them, enable or disable them.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print the version of this kaged binary.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum CageCommand {
    /// Run COMMAND in the foreground in an agent's cage; exits with the command's status.
    Run {
        /// The project directory (with .kaged/project.yaml).
        project: std::path::PathBuf,
        /// Whose cage (default: the primary agent's).
        #[arg(long, default_value = "primary")]
        agent: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// Start an agent, a terminal or a task in a project and attach to it (prints the session
    /// id first; with --detach, only the id). A model agent's session is a conversation:
    /// --message gives it its first message.
    Start {
        /// The project's slug (see `kaged project list`).
        project: String,
        /// Run this agent (`primary` for the root agent).
        #[arg(long, group = "what")]
        agent: Option<String>,
        /// A model agent's first message (a command agent has none).
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
        /// Run this project task.
        #[arg(long, group = "what")]
        task: Option<String>,
        /// Open a terminal (the project's shell).
        #[arg(long, group = "what")]
        terminal: bool,
        /// Print the session id and return; attach later with `kaged session attach ID`.
        #[arg(long)]
        detach: bool,
    },
    /// List sessions, newest first.
    List {
        /// Only this project's.
        project: Option<String>,
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Show one session: its project, kind, state, command, and whether it is a conversation.
    Show {
        id: String,
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Attach this terminal to a session (Ctrl-] detaches; the run goes on). A conversation
    /// streams as text; each line typed is sent as a message; Ctrl-D detaches.
    Attach {
        id: String,
        /// A conversation: show only the records after this seq (default: all of them).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
    },
    /// Send a model agent's session a message (taken at its next model call; an ended
    /// session is resumed).
    Send {
        id: String,
        /// The message; `-` reads it from stdin.
        text: String,
    },
    /// Abort a conversation's turn in flight (the session goes on and takes the next message).
    Abort { id: String },
    /// Write a session's raw output bytes to stdout; a conversation as text (who said what,
    /// each tool call and its result).
    Transcript {
        id: String,
        /// A conversation's records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Abort a run: SIGHUP and SIGTERM now, SIGKILL after 3 seconds.
    Kill { id: String },
    // The help text names a config section, `[sessions]`; clap prints it as written.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Apply transcript retention now ([sessions] max_total_mb, max_age_days): delete the
    /// transcripts of the oldest ended sessions (never a live one); the rows stay.
    Prune {
        /// List what would be pruned and delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: JsonOutput,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List the pending approvals of every project, newest first: id, age, project, agent,
    /// tool, its arguments on one line, state.
    #[command(mut_arg("json", |a| a.help("Print the approvals as the API serves them (a JSON array)")))]
    List {
        /// Decided ones too (approved, denied, cancelled).
        #[arg(long)]
        all: bool,
        /// Only this project's.
        #[arg(long, value_name = "SLUG")]
        project: Option<String>,
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Let the waiting tool call run; the paused turn goes on.
    Approve {
        /// The approval's id (apr_…; see `kaged approvals list`).
        id: String,
        /// Also let this agent's later calls of the same tool in this session run without asking.
        #[arg(long)]
        session: bool,
    },
    /// Refuse the waiting tool call: it does not run, and the model gets the refusal (with
    /// the message) as the tool's result.
    Deny {
        /// The approval's id (apr_…; see `kaged approvals list`).
        id: String,
        /// Why, for the model (it receives `denied by the operator: TEXT`).
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Register a project directory (with .kaged/project.yaml) with the running daemon.
    Load {
        /// The project directory.
        path: std::path::PathBuf,
    },
    /// List the loaded projects and whether their files are currently valid.
    List {
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Forget a loaded project: no new runs, no more watching. Its directory, transcripts and
    /// session records stay.
    Unload {
        #[command(flatten)]
        project: ProjectRef,
    },
    /// Re-read a project's files now. An edit that loosens a cage stays pending until accepted.
    Reload {
        #[command(flatten)]
        project: ProjectRef,
        /// Apply a pending edit that loosens a cage (review .kaged/project.yaml first), and
        /// re-record whether the project has a .git (after checking .git/config and its hooks).
        #[arg(long)]
        accept: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DslCommand {
    /// Check a project's .kaged/project.yaml (and project.local.yaml over it): every problem at
    /// once, with file, line, column, key path and a fix. Exit 0 only when valid.
    Validate {
        /// The project directory, or the project.yaml file itself.
        #[arg(default_value = ".")]
        path: std::path::PathBuf,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of project files (also served at GET /api/v1/dsl/schema).
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Print the JSON Schema of plugin manifests (kaged-plugin.yaml; also served at
    /// GET /api/v1/plugins/schema).
    Schema,
    /// Check a plugin's kaged-plugin.yaml: every problem at once, with line, column, key path
    /// and a fix. Exit 0 only when valid.
    Validate {
        /// The plugin's directory, or its kaged-plugin.yaml.
        #[arg(default_value = ".")]
        path: std::path::PathBuf,
        /// `text` for people, `json` for tools.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    // The help text names a config section, `[plugins]`; clap prints it as written.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Validate a plugin, show what it may do, and copy it into [plugins] dir as DIR/NAME
    /// (after confirmation, or with --yes). Enable it afterwards with `kaged plugin enable NAME`.
    #[command(
        long_about = "Validate a plugin, show what it may do, and copy it into the \
        configured [plugins] dir as DIR/NAME.\n\n\
        Prints the plugin's name, version and capabilities in plain words; when a plugin of \
        the same name is installed, also what the new version may do that the installed one \
        could not. Asks `Install? [y/N]` on a terminal; without a terminal it installs only \
        with --yes.\n\n\
        The directory is copied as regular files and directories only: a symbolic link or a \
        special file anywhere in it is refused, naming it. Directories become 0700, files keep \
        their permission bits without group/other write (and without setuid/setgid). The copy \
        is made beside DIR/NAME and renamed into place: an installed version is replaced only \
        once the copy is complete."
    )]
    Install {
        /// The plugin's directory, or its kaged-plugin.yaml.
        path: std::path::PathBuf,
        /// Install without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// List the installed plugins: name, version, state, restarts, and why a plugin is not
    /// running (or its last error).
    #[command(mut_arg("json", |a| a.help("Print the daemon's answer (GET /api/v1/plugins) as JSON")))]
    List {
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Enable an installed plugin: the daemon starts it (also one disabled after failures).
    Enable {
        /// The plugin's name (see `kaged plugin list`).
        name: String,
    },
    /// Disable a plugin: the daemon stops it and does not start it again until enabled.
    Disable {
        /// The plugin's name (see `kaged plugin list`).
        name: String,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Mint a token for ACTOR; its plaintext is printed once, on stdout.
    Create {
        /// Who the token acts as (appears in the audit log).
        #[arg(long)]
        actor: String,
        /// A label to recognise the token by, e.g. the machine it lives on.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets), revoked ones included.
    List {
        #[command(flatten)]
        output: JsonOutput,
    },
    /// Revoke a token at once.
    Revoke {
        /// The id shown by `kaged tokens list`.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

#[derive(Args, Debug)]
pub struct StartArgs {
    // The help text names a config section, `[daemon]`; clap prints it as written.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Listen on this address (IP:PORT), overriding [daemon] bind and KAGED_BIND.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Read this config file instead of the mode's default location.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// No authentication at all: ONLY for trusted development. Every response carries
    /// `X-Kaged-Warning: insecure`.
    #[arg(long)]
    pub insecure: bool,
    /// Unauthenticated GET requests only (changes, the event stream and token administration
    /// still need credentials). Cannot be combined with require_token_identity.
    #[arg(long, conflicts_with = "insecure")]
    pub insecure_readonly: bool,
    /// Run work without a sandbox (daemon-level opt-out). Every response carries
    /// `X-Kaged-Warning: no-sandbox`.
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Print the running daemon's current nonce (send it as X-Kaged-Auth-Nonce from scripts).
    Nonce,
    /// Print a fresh one-time launch URL for the running daemon and try to open it in a browser.
    Open {
        /// Do not try to open a browser; only print the URL.
        #[arg(long)]
        no_browser: bool,
        /// How long the URL stays valid, in seconds (at most 3600).
        #[arg(long, value_name = "SECS", default_value_t = kaged_auth::DEFAULT_LAUNCH_TTL_SECS,
              value_parser = clap::value_parser!(u64).range(1..=kaged_auth::MAX_LAUNCH_TTL_SECS))]
        ttl: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Copy every table of one database into another, empty one (SQLite → PostgreSQL and back).
    #[command(
        long_about = "Copy every table of one database into another, empty one: SQLite → \
        PostgreSQL to move to a team's server, PostgreSQL → SQLite and back.\n\n\
        Stop the daemon first: both databases are claimed as a daemon claims them, so a daemon \
        running on either refuses the copy, naming it. Both are brought to this kaged's schema. \
        A target holding any row is refused untouched, naming the tables. Rows keep their ids \
        and the id counters continue past them; the copy is one transaction of the target (all \
        or nothing); the rows of each table are counted in the target and compared before it \
        commits, and printed. Progress goes to stderr.\n\n\
        URLs: sqlite:///ABSOLUTE/PATH/kaged.db, postgres://USER@HOST:5432/DATABASE (the forms \
        of [storage] url); a PostgreSQL password comes from the URL or KAGED_STORAGE_PASSWORD.\n\n\
        Exits 0 when copied, 2 for a bad URL, the same database twice or a target holding rows, \
        1 otherwise (a database in use, unreachable, or failing)."
    )]
    Copy {
        /// The database to copy from.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The empty database to copy into.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Write a consistent snapshot of the SQLite database to FILE, also while the daemon runs.
    #[command(
        long_about = "Write a consistent snapshot of kaged's SQLite database to FILE \
        (SQLite's VACUUM INTO: one read transaction, the daemon keeps writing meanwhile), \
        owner-only (0600), checked after writing. FILE must not exist.\n\n\
        The database is [storage] url of the configuration (as `kaged start` reads it), or \
        --url. For a PostgreSQL database kaged prints the pg_dump command to use instead on \
        stdout and exits 2.\n\n\
        Restore: stop the daemon, put FILE in place of the database file (removing any -wal and \
        -shm files beside it), start the daemon."
    )]
    Backup {
        /// Where to write the snapshot (must not exist).
        file: std::path::PathBuf,
        /// The database (default: `[storage] url` of the configuration).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}
