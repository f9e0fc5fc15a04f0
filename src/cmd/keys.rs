//! `livecheck keys`: create, list and revoke API keys.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use livecheck::store::{ApiKey, Store};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    database: super::common::DatabaseArg,

    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Create a key and print its token (shown only this once).
    Create {
        /// A label for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// Print one JSON line {"id","name","token"}.
        #[arg(long)]
        json: bool,
    },
    /// List every key (the tokens themselves cannot be shown).
    List {
        /// Print a JSON array of keys.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: its token stops working at once.
    Revoke {
        /// The key id (see `keys list`).
        id: Uuid,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = Store::connect(&args.database.url).await?;
        let result = execute(&store, args.command).await;
        store.close().await;
        result
    })
}

async fn execute(store: &Store, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create { name, json } => {
            let (key, token) = store.create_key(&name).await?;
            if json {
                let line = serde_json::json!({
                    "id": key.id,
                    "name": key.name,
                    "token": token,
                });
                println!("{line}");
            } else {
                println!("Created API key \"{}\"", key.name);
                println!("  id:     {}", key.id);
                println!("  prefix: {}", key.prefix);
                println!("  token:  {token}");
                println!();
                println!("Store the token now: it will not be shown again.");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else if keys.is_empty() {
                println!("No API keys. Create one with `livecheck keys create --name NAME`.");
            } else {
                println!("{}", table(&keys));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(id).await? {
                let name = store.get_key(id).await?.map(|k| k.name).unwrap_or_default();
                println!("Revoked API key \"{name}\" ({id}).");
                return Ok(ExitCode::SUCCESS);
            }
            match store.get_key(id).await? {
                Some(key) => {
                    let at = key.revoked_at.map(when).unwrap_or_default();
                    println!(
                        "API key \"{}\" ({id}) was already revoked at {at}.",
                        key.name
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("error: no API key with id {id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn table(keys: &[ApiKey]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["Name", "ID", "Prefix", "Created", "Last used", "Revoked"]);
    for key in keys {
        table.add_row([
            key.name.clone(),
            key.id.to_string(),
            key.prefix.clone(),
            when(key.created_at),
            key.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            key.revoked_at.map(when).unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}
