//! `mesh validate PATH...`

use std::process::ExitCode;

use mesh_config::{Diagnostic, Severity};

use crate::{ConfigArgs, Format};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// YAML files or folders (searched recursively for *.yaml and *.yml).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Treat analysis warnings (what `istioctl analyze` reports) as errors.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) fn run(args: Args) -> ExitCode {
    let report = match args.config.loader().strict(args.strict).check(&args.paths) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh validate: {e}");
            return ExitCode::from(2);
        }
    };
    let diags = &report.diagnostics;
    match args.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&diags.0).expect("diagnostics serialize");
            println!("{json}");
        }
        Format::Text => {
            for d in diags.iter() {
                println!("{d}");
            }
            println!("{}", summary(&report.files.len(), &diags.0));
        }
    }
    if diags.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summary(files: &usize, diags: &[Diagnostic]) -> String {
    let count = |s: Severity| diags.iter().filter(|d| d.severity == s).count();
    let (errors, warnings, notes) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Note),
    );
    let verdict = if errors == 0 { "ok" } else { "invalid" };
    format!(
        "{verdict}: {files} file(s) checked, {errors} error(s), {warnings} warning(s), {notes} note(s)"
    )
}
