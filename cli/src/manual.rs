//! `arca completions SHELL` and `arca man DIR`: shell completions and man pages generated from
//! the clap definitions when asked, so they always describe the binary that prints them and need
//! no build step of their own (scripts/install.sh runs both, as a package build would).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Command;

/// Prints the completion script of `cmd` for `shell` on stdout.
pub fn completions(mut cmd: Command, shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut cmd, "arca", &mut std::io::stdout());
}

/// Writes `arca.1` and one page per visible subcommand (`arca-push.1`, `arca-key-gen.1`, ...,
/// the names `arca.1`'s SUBCOMMANDS section refers to) into `dir`; returns their paths.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Built once from the top, so that each subcommand's display name is its full
    // `arca-key-gen` form; `help` is clap's, not ours, and gets no page.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd).manual("arca");
    let path = page
        .generate_to(dir)
        .with_context(|| format!("writing a man page into {}", dir.display()))?;
    written.push(path);
    Ok(())
}
