//! What the dispatcher asks of a parsed command besides its arguments: whether it wants JSON,
//! its source arguments, and what an interrupt leaves behind.

use super::{Command, ConfigCommand, SourceArg};

impl Command {
    /// Whether the command was asked for JSON (then an error is JSON on stdout too).
    pub fn json(&self) -> bool {
        match self {
            Command::Load(a) => a.json,
            Command::Seed(a) => a.json,
            Command::Sync(a) => a.json,
            Command::Backfill(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Status(a) => a.json,
            Command::Bench(a) => a.json,
            Command::Config(ConfigCommand::Check(a)) => a.json,
            Command::Demo(a) => a.json,
            Command::Search(a) => a.json,
            Command::Config(ConfigCommand::Example) | Command::Completions(_) => false,
        }
    }

    /// What an interrupt leaves behind, for this command.
    pub fn after_interrupt(&self) -> &'static str {
        match self {
            Command::Load(_) => {
                "interrupted: the target is as it was; the new file is kept, and `scrobsync load --resume` with the same source and target continues it (a plain load starts over)"
            }
            Command::Demo(_) => "interrupted: the target is as it was",
            Command::Sync(_) => {
                "interrupted: nothing of this sync was committed; the next sync continues from the target's mark"
            }
            Command::Backfill(_) => {
                "interrupted: the windows already finished are kept; run the same backfill with --resume to continue"
            }
            Command::Verify(a) if a.repair => {
                "interrupted: the windows already repaired are kept; run verify --repair again to finish"
            }
            Command::Verify(_) => "interrupted: nothing was changed",
            Command::Bench(_) => {
                "interrupted: the next bench drops the scratch tables this one left (scrobsync_bench_sync*)"
            }
            _ => "interrupted",
        }
    }

    /// The source arguments of a command that reads the source.
    pub fn source(&self) -> Option<&SourceArg> {
        match self {
            Command::Load(a) => Some(&a.source),
            Command::Seed(a) => Some(&a.source),
            Command::Sync(a) => Some(&a.source),
            Command::Backfill(a) => Some(&a.source),
            Command::Verify(a) => Some(&a.source),
            Command::Bench(a) => Some(&a.source),
            Command::Config(ConfigCommand::Check(a)) => Some(&a.source),
            _ => None,
        }
    }
}
