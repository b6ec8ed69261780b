//! The binary: parse the command line, build a plan, run it, and turn errors into one line
//! on stderr and an exit status (2: the settings are wrong and nothing was attempted; 1: a
//! failure while running).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use spiffe_aws_agent::cli::{Cli, Command, LogFormat};
use spiffe_aws_agent::identity::workload_api::WorkloadApiError;
use spiffe_aws_agent::identity::IdentityError;
use spiffe_aws_agent::webidentity::WebIdentityError;
use spiffe_aws_agent::{agent, cli, diagnose, plan, serve, Clock, TokioClock};

fn main() -> ExitCode {
    // The TPM2 Software Stack logs its own errors to stderr; ours already carry them, and a
    // credential_process failure is one line. Set before any thread exists.
    #[cfg(feature = "tpm")]
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    let cli = Cli::parse();
    let compat = match &cli.command {
        Command::CredentialProcess(a) => Some(&a.session.compat),
        Command::Run(a) => Some(&a.session.compat),
        Command::Serve(a) => Some(&a.session.compat),
        Command::Update(a) => Some(&a.session.compat),
        Command::X509CredentialFile(a) | Command::X509CredentialFileOneshot(a) => {
            Some(&a.session.compat)
        }
        Command::SignString(a) => Some(&a.compat),
        Command::ReadCertificateData(a) => Some(&a.compat),
        _ => None,
    };
    if let Some((flag, why)) = compat.and_then(|c| c.unsupported()) {
        return fail(&format!("{flag}: {why}"), 2);
    }
    let debug = cli.debug_before_command
        || compat.is_some_and(|c| c.debug)
        || matches!(&cli.command, Command::JwtCredentialProcess(a) if a.debug);
    // credential-process output is read by SDKs: keep stderr quiet unless asked.
    init_logging(
        match (&cli.command, debug) {
            (_, true) => "spiffe_aws_agent=debug,info",
            (Command::CredentialProcess(_) | Command::JwtCredentialProcess(_), false) => "warn",
            _ => "info",
        },
        cli.log_format,
    );
    if compat.is_some_and(|c| c.no_verify_ssl)
        && !matches!(
            cli.command,
            Command::SignString(_) | Command::ReadCertificateData(_)
        )
    {
        tracing::warn!("--no-verify-ssl: the Roles Anywhere endpoint's TLS certificate is not verified; whoever is on the network path can impersonate it and read the credentials (use --ca-bundle for a private CA instead)");
    }
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    match cli.command {
        Command::CredentialProcess(args) => {
            // One exchange: a single-threaded runtime starts fastest.
            let runtime = match build_runtime(&mut tokio::runtime::Builder::new_current_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            if let Some(socket) = &args.agent {
                // The fast path: one local round trip to a running agent.
                let role = args.role.as_deref();
                return match runtime.block_on(serve::agent_socket::fetch(socket, role)) {
                    Ok(json) => print_line(json.trim_end()),
                    Err(e) => fail(&e.to_string(), 1),
                };
            }
            let plan = match plan::credential_process(&args, &clock) {
                Ok(plan) => plan,
                Err(e) => return fail(&e.to_string(), 2),
            };
            match runtime.block_on(agent::one_shot(&plan, &*clock)) {
                Ok(creds) => print_line(&serve::process::render(&creds)),
                Err(e) => fail(&e.to_string(), one_shot_exit_code(&e)),
            }
        }
        Command::JwtCredentialProcess(args) => {
            let runtime = match build_runtime(&mut tokio::runtime::Builder::new_current_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let plan = match plan::jwt_credential_process(&args, &clock) {
                Ok(plan) => plan,
                Err(e) => return fail(&e.to_string(), 2),
            };
            match runtime.block_on(agent::web_identity_one_shot(&plan)) {
                Ok(creds) => print_line(&serve::process::render(&creds)),
                Err(e) => fail(&e.to_string(), web_identity_exit_code(&e)),
            }
        }
        Command::Run(args) => run_agent(plan::run(&args, &clock), false),
        Command::Serve(args) => run_agent(plan::serve(&args, &clock), false),
        Command::Update(args) => run_agent(plan::update(&args, &clock), args.once),
        Command::X509CredentialFile(args) => x509_credential_file(&args, &clock, false),
        Command::X509CredentialFileOneshot(args) => x509_credential_file(&args, &clock, true),
        Command::Inspect(args) => inspect(&args, &*clock),
        Command::Version => print_line(env!("CARGO_PKG_VERSION")),
        Command::SignString(args) => sign_string(&args),
        Command::ReadCertificateData(args) => {
            let Some(path) = &args.certificate else {
                return fail("--certificate FILE is required", 2);
            };
            match diagnose::certificate_data::read(path, args.pkcs8_password.as_ref()) {
                Ok(data) => print_bytes(diagnose::certificate_data::render(&data).as_bytes()),
                Err(e) => fail(&e.to_string(), 1),
            }
        }
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => fail(
            "this build has no `dev` (its doubles carry test keys, so it is opt-in): run `cargo run --release --features dev -- dev`",
            2,
        ),
        #[cfg(feature = "dev")]
        Command::Dev(args) => {
            let runtime = match build_runtime(&mut tokio::runtime::Builder::new_multi_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(spiffe_aws_agent::dev::command::run(&args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e.to_string(), e.exit_code()),
            }
        }
    }
}

/// 2 when the Workload API address or a PKCS#11 setting itself is unusable (a setting,
/// though only dialing or the token finds out), 1 for everything that went wrong while
/// fetching.
fn one_shot_exit_code(e: &agent::OneShotError) -> u8 {
    match e {
        agent::OneShotError::Identity(IdentityError::WorkloadApi(
            WorkloadApiError::BadAddress { .. },
        )) => 2,
        // The library, the URI or the PIN is wrong: a setting, though only the token says.
        agent::OneShotError::Identity(IdentityError::Pkcs11(e)) if e.is_setting() => 2,
        #[cfg(feature = "tpm")]
        agent::OneShotError::Identity(IdentityError::Tpm(e)) if e.is_setting() => 2,
        agent::OneShotError::Identity(IdentityError::NoTpmSupport { .. }) => 2,
        _ => 1,
    }
}

/// As [`one_shot_exit_code`]: 2 for an unusable Workload API address, else 1.
fn web_identity_exit_code(e: &WebIdentityError) -> u8 {
    use spiffe_aws_agent::identity::jwt_svid::JwtSvidError;
    match e {
        WebIdentityError::JwtSvid(JwtSvidError::WorkloadApi(WorkloadApiError::BadAddress {
            ..
        })) => 2,
        _ => 1,
    }
}

/// `inspect`: the report on stdout; exit 0 when every SVID is usable, 1 otherwise.
fn inspect(args: &spiffe_aws_agent::cli::InspectArgs, clock: &dyn Clock) -> ExitCode {
    use spiffe_aws_agent::cli::InspectOutput;
    let spec = match plan::inspect(args) {
        Ok(spec) => spec,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let runtime = match build_runtime(&mut tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = match runtime.block_on(spiffe_aws_agent::inspect::inspect(&spec, clock.now())) {
        Ok(report) => report,
        Err(e) => return fail(&e.to_string(), 1),
    };
    let text = match args.output {
        InspectOutput::Text => spiffe_aws_agent::inspect::render_text(&report),
        InspectOutput::Json => spiffe_aws_agent::inspect::render_json(&report),
    };
    let code = print_line(text.trim_end());
    if code != ExitCode::SUCCESS || report.usable() {
        code
    } else {
        ExitCode::from(1)
    }
}

/// Builds a runtime with I/O and timers, or reports why it could not.
fn build_runtime(
    builder: &mut tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder
        .enable_all()
        .build()
        .map_err(|e| fail(&format!("cannot start the async runtime: {e}"), 1))
}

/// Prints the credentials document and exits 0.
fn print_line(line: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return fail("cannot write to stdout", 1);
    }
    ExitCode::SUCCESS
}

/// `x509-credential-file[-oneshot]`: `--replace` / `--force` applied to the file, then the
/// credentials-file writer of `update`.
fn x509_credential_file(
    args: &cli::X509CredentialFileArgs,
    clock: &Arc<dyn Clock>,
    once: bool,
) -> ExitCode {
    let plan = plan::x509_credential_file(args, clock);
    if plan.is_ok() {
        let prep = serve::credentials_file::Preparation {
            replace: args.replace,
            force: args.force,
        };
        match serve::credentials_file::prepare(&args.aws_credentials_path, prep) {
            Ok(true) => {
                tracing::info!(path = %args.aws_credentials_path.display(), "removed the existing credentials file (--replace or --force)")
            }
            Ok(false) => {}
            Err(e) => return fail(&e.to_string(), 1),
        }
    }
    run_agent(plan, once)
}

/// `sign-string`: the fixed test string's signature, in the asked format.
fn sign_string(args: &cli::SignStringArgs) -> ExitCode {
    use diagnose::sign_string::{self, Digest, Format};
    let key = match sign_string::load_key(
        args.private_key.as_deref(),
        args.certificate.as_deref(),
        args.pkcs8_password.as_ref(),
    ) {
        Ok(key) => key,
        Err(e) => return fail(&e.to_string(), 1),
    };
    let digest = match args.digest {
        cli::SignatureDigest::Sha256 => Digest::Sha256,
        cli::SignatureDigest::Sha384 => Digest::Sha384,
        cli::SignatureDigest::Sha512 => Digest::Sha512,
    };
    let format = match args.format {
        cli::SignatureFormat::Json => Format::Json,
        cli::SignatureFormat::Text => Format::Text,
        cli::SignatureFormat::Bin => Format::Bin,
    };
    match sign_string::run(&key, digest, format) {
        Ok(out) => print_bytes(&out),
        Err(e) => fail(&e.to_string(), 1),
    }
}

/// Prints `bytes` as they are (aws_signing_helper's diagnostic output has no newline).
fn print_bytes(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(bytes)
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return fail("cannot write to stdout", 1);
    }
    ExitCode::SUCCESS
}

/// Runs the long-lived agent on a multi-threaded runtime.
fn run_agent(plan: Result<agent::AgentPlan, plan::PlanError>, once: bool) -> ExitCode {
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string(), 2),
    };
    // One worker thread unless TOKIO_WORKER_THREADS says otherwise: the agent shares the host
    // with the clients it serves, and on two cores one worker gave the best tail latency with
    // no loss of throughput (BENCHMARKS.md).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match std::env::var("TOKIO_WORKER_THREADS") {
        // tokio reads the variable itself (and panics on a bad value): check it first.
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => {
                builder.worker_threads(n);
            }
            _ => {
                return fail(
                    &format!("TOKIO_WORKER_THREADS={v:?} is not a positive number of threads"),
                    2,
                )
            }
        },
        _ => {
            builder.worker_threads(1);
        }
    }
    let runtime = match build_runtime(&mut builder) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(agent::run(plan, once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), 1),
    }
}

/// One line on stderr, the way `credential_process` callers show it to the user.
fn fail(message: &str, code: u8) -> ExitCode {
    let line = message.replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "spiffe-aws-agent: {line}");
    ExitCode::from(code)
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line, fields flattened beside `message`, for log shippers. The same
        // events and fields as the text format, so the same rule holds: no secrets.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
