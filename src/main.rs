//! The `session-sidecar` binary: parses the command line, sets up logging and runs `serve` or
//! `token`. Everything testable lives in the library.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use session_sidecar::config::{Cli, Command, Config, LogFormat, ServeArgs, TokenArgs};
use session_sidecar::mint::{TokenSigner, random_id};
use session_sidecar::store::{NewSession, unix_now};
use session_sidecar::{Sidecar, shutdown_signal};

/// Exit code for a configuration the sidecar refuses (EX_USAGE, as linkerd2-proxy does).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(args) => token(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let dev_secret = args.dev.then(|| rand::random::<[u8; 32]>().to_vec());
    let config = match Config::from_args(&args, dev_secret) {
        Ok(config) => config,
        Err(problems) => {
            for problem in &problems {
                eprintln!("session-sidecar: {problem}");
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("session-sidecar: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let dev = config.dev;
        let sidecar = match Sidecar::bind(config).await {
            Ok(sidecar) => sidecar,
            Err(error) => {
                eprintln!("session-sidecar: {error}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(api = %sidecar.api_addr(), admin = %sidecar.admin_addr(), "serving");
        if dev {
            print_dev_banner(&sidecar).await;
        }
        sidecar.run(shutdown_signal()).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// `--dev`: creates a demo session and prints a token bound to it, with a curl line.
async fn print_dev_banner(sidecar: &Sidecar) {
    let app = sidecar.app();
    let Some(signer) = app.signer() else { return };
    let sid = random_id(18);
    let expires_at = unix_now() + 3600;
    let created = app
        .sessions()
        .create(NewSession {
            sid: sid.clone(),
            sub: "dev-user".into(),
            data: serde_json::json!({"role": "developer", "note": "created by --dev"}),
            expires_at,
            secret: None,
        })
        .await;
    let token = signer.sign(
        "dev-user",
        Some(&sid),
        Some(&random_id(16)),
        expires_at,
        &[],
    );
    match (created, token) {
        (Ok(()), Ok(token)) => {
            let addr = sidecar.api_addr();
            let banner = format!(
                "session-sidecar --dev: embedded store, random HS256 secret. Not for production.\n\
                 A token for the demo session {sid} (valid 1 h):\n\n  {token}\n\n\
                 Verify it:\n\n  curl -i -H 'Authorization: Bearer {token}' http://{addr}/verify\n\n\
                 Create more with: curl -s -X POST http://{addr}/v1/sessions -d '{{\"sub\":\"alice\",\"data\":{{}}}}'\n"
            );
            // Not println!: a closed stdout must not take the sidecar down.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(banner.as_bytes());
            let _ = stdout.flush();
        }
        _ => eprintln!("session-sidecar: could not create the --dev demo session"),
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let secret = match std::fs::read(&args.jwt_secret_file) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
        Err(error) => {
            eprintln!(
                "session-sidecar: --jwt-secret-file: cannot read {}: {error}",
                args.jwt_secret_file.display()
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if secret.is_empty() {
        eprintln!("session-sidecar: --jwt-secret-file: the file is empty");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let signer = TokenSigner::new(&secret, args.issuer, args.audience);
    let jti = (!args.no_jti).then(|| random_id(16));
    let exp = unix_now() + args.ttl.as_secs();
    match signer.sign(
        &args.sub,
        args.sid.as_deref(),
        jti.as_deref(),
        exp,
        &args.claims,
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("session-sidecar: cannot sign: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: escape codes garble files, pipes and log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
