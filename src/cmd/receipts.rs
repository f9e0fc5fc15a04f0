//! `livecheck receipts`: signing keys and offline verification of decision receipts
//! (docs/receipts.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use livecheck::fetch::Fetcher;
use livecheck::receipts::{self, Jwks, ReceiptError, ReceiptKey};

use super::common::FetchArgs;

#[derive(Debug, Args)]
pub struct ReceiptsArgs {
    #[command(subcommand)]
    command: ReceiptsCommand,
}

#[derive(Debug, Subcommand)]
enum ReceiptsCommand {
    /// Write a new signing key file (mode 0600; never overwrites) and print its kid.
    Keygen {
        /// The key file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Rotation: keep this key file's public key (and the keys it had retired) in the new
        /// key's JWKS, so receipts it signed still verify.
        #[arg(long, value_name = "OLD_FILE")]
        retire: Option<PathBuf>,
    },
    /// Verify a receipt offline; print its payload as JSON. Exit 0: valid. Exit 1: malformed,
    /// unsupported algorithm, unknown kid or bad signature (said on stderr).
    Verify {
        /// The service's key set: a JWKS file, or an http(s) URL of one
        /// (`https://HOST/.well-known/jwks.json`).
        #[arg(long, value_name = "FILE|URL", required_unless_present = "key")]
        jwks: Option<String>,
        /// A key file instead of a JWKS (the operator's own check).
        #[arg(long, value_name = "FILE", conflicts_with = "jwks")]
        key: Option<PathBuf>,
        /// The receipt (compact JWS); `-` reads it from stdin.
        receipt: String,
        #[command(flatten)]
        fetch: FetchArgs,
    },
}

/// Largest JWKS document read or fetched.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

fn load_jwks(source: &str, fetch: &FetchArgs) -> anyhow::Result<Jwks> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let url = url::Url::parse(source).with_context(|| format!("bad JWKS URL {source}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let bytes = runtime.block_on(async {
            let fetcher = Fetcher::new(fetch.fetch_config(MAX_JWKS_BYTES))?;
            fetcher
                .fetch(&url)
                .await
                .map(|f| f.bytes)
                .map_err(|e| anyhow::anyhow!("cannot fetch {source}: {}", e.client_message()))
        })?;
        String::from_utf8(bytes.to_vec()).context("the JWKS is not UTF-8")?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?
    };
    Ok(Jwks::parse(&text)?)
}

/// The stable code of a verification failure (docs/receipts.md).
fn failure_code(e: &ReceiptError) -> &'static str {
    match e {
        ReceiptError::Malformed(_) => "malformed",
        ReceiptError::Algorithm(_) => "algorithm",
        ReceiptError::UnknownKid(_) => "unknown_kid",
        ReceiptError::BadSignature(_) => "bad_signature",
        ReceiptError::KeyFile { .. } | ReceiptError::Jwks(_) => "key_set",
    }
}

pub fn run(args: ReceiptsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ReceiptsCommand::Keygen { out, retire } => {
            let key = match retire {
                Some(old) => ReceiptKey::rotate(&ReceiptKey::load(&old)?),
                None => ReceiptKey::generate(),
            };
            key.save(&out)?;
            println!("{}", key.kid());
            eprintln!(
                "wrote {} (kid {}, {} retired key(s) kept)",
                out.display(),
                key.kid(),
                key.jwks().keys.len() - 1
            );
            Ok(ExitCode::SUCCESS)
        }
        ReceiptsCommand::Verify {
            jwks,
            key,
            receipt,
            fetch,
        } => {
            let token = if receipt == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                receipt
            };
            let jwks = match (jwks, key) {
                (_, Some(k)) => ReceiptKey::load(&k)?.jwks(),
                (Some(source), None) => load_jwks(&source, &fetch)?,
                (None, None) => anyhow::bail!("give --jwks FILE|URL or --key FILE"),
            };
            match receipts::verify(&token, &jwks) {
                Ok(payload) => {
                    println!("{}", serde_json::to_string_pretty(&payload)?);
                    eprintln!("valid: signed by {}", receipts::receipt_kid(&token)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("invalid receipt ({}): {e}", failure_code(&e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
