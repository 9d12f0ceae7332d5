//! `eventctl schema`: the per-type schemas held by the lake (one type's, or the list).

use anyhow::Result;
use clap::Args;

use super::{LakeArgs, runtime};

/// Options of `eventctl schema`.
#[derive(Args)]
pub struct SchemaArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The event type.
    pub event_type: Option<String>,
}

/// Runs `eventctl schema`.
pub fn run(args: SchemaArgs) -> Result<i32> {
    let SchemaArgs { lake, event_type } = args;
    let lake = lake.open()?;
    let rt = runtime(Some(2))?;
    match event_type {
        Some(t) => println!("{}", serde_json::to_string_pretty(&*rt.block_on(lake.registry.load(&t))?)?),
        None => {
            for t in rt.block_on(lake.registry.types())? {
                println!("{t}");
            }
        }
    }
    Ok(0)
}
