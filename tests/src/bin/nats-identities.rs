//! Writes the per-stage NATS identities of `nats/identities.toml` into a
//! directory: `users.conf`, the server's `authorization` block (NKey public
//! keys and permissions, nothing secret; include it from the server config),
//! and `<identity>.nk`, each identity's NKey seed (mode 0600, a secret: give
//! each stage only its own, as `NATS_NKEY`). Every run makes new keys, so
//! rotating is running it again and rolling the server and the stages.
//! `scripts/nats-identities` runs it; the tests build the same block.

use std::path::PathBuf;

use clap::Parser;
use orderhub_tests::identities::Identities;

#[derive(Debug, Parser)]
struct Args {
    /// Directory to write users.conf and the seed files into
    out: PathBuf,

    /// The permissions file
    #[arg(long, default_value_os_t = orderhub_tests::identities::specs_path())]
    identities: PathBuf,

    /// Leave out every stream, bucket and consumer create and update: the
    /// stages run with MANAGE_STREAMS=false and the admin identity sets up
    #[arg(long)]
    no_manage: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ids = Identities::generate_from(&args.identities, !args.no_manage)?;
    ids.write(&args.out)?;
    for name in ids.names() {
        println!("{}", Identities::seed_path(&args.out, name).display());
    }
    println!("{}", args.out.join("users.conf").display());
    Ok(())
}
