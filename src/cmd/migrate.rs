//! `livecheck migrate`: bring the database schema up to date (or, with `--check`, only say whether
//! it is), then print every migration and its state.
//!
//! `serve` and `keys` migrate at connect as well; this command exists for deployments that
//! migrate once before a rollout (a Kubernetes Job, a release step). On PostgreSQL the migrator
//! holds PostgreSQL's advisory lock, so it is safe while replicas start.

use std::process::ExitCode;

use anyhow::Context as _;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use livecheck::store::{MigrationState, Store, StoreOptions};

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: super::common::DatabaseArg,
    /// Change nothing: report the schema and exit with status 1 if a migration is pending.
    #[arg(long)]
    check: bool,
    /// Print one JSON object {"database","migrations":[{"version","description","state"}]}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let options = StoreOptions {
            migrate: !args.check,
            ..StoreOptions::default()
        };
        let store = Store::connect_with(&args.database.url, &options).await?;
        let schema = store.schema().await;
        let target = store.target().to_owned();
        store.close().await;
        let schema = schema?;
        let pending = schema
            .iter()
            .filter(|m| m.state == MigrationState::Pending)
            .count();
        if args.json {
            let line = serde_json::json!({ "database": target, "migrations": schema });
            println!("{line}");
        } else {
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(["version", "description", "state"]);
            for m in &schema {
                let state = match m.state {
                    MigrationState::Applied => "applied",
                    MigrationState::Pending => "pending",
                    MigrationState::Newer => "applied by a newer release",
                };
                table.add_row([m.version.to_string(), m.description.clone(), state.into()]);
            }
            println!("{table}");
            if pending == 0 {
                println!("{target}: schema up to date");
            } else {
                println!("{target}: {pending} migration(s) pending");
            }
        }
        Ok(if pending == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
