//! Every command, subcommand, flag and argument of `tenure` says what it is:
//! `tenure help …` is the reference an operator reads first.

use clap::CommandFactory;

use crate::Cli;

/// Walks the command tree and names everything without help text (clap's
/// own `--help` and `--version` aside).
fn missing_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            let name = arg.get_long().map_or_else(|| format!("<{id}>"), |l| format!("--{l}"));
            missing.push(format!("{path} {name}"));
        }
    }
    for sub in command.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_name() != "help" && sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(format!("{sub_path} (the subcommand itself)"));
        }
        missing_help(sub, &sub_path, missing);
    }
}

#[test]
fn every_command_and_argument_has_help() {
    let mut command = Cli::command();
    command.build();
    let mut missing = Vec::new();
    missing_help(&command, "tenure", &mut missing);
    assert!(missing.is_empty(), "without help text:\n  {}", missing.join("\n  "));
}

#[test]
fn the_command_line_is_consistent() {
    // clap's own checks: no two flags with one name, every reference resolves.
    Cli::command().debug_assert();
}

/// Where each command's flags come from: only the commands that decide take
/// --plugin-deadline, only those that set or deliver targets take the bounds.
#[test]
fn decision_and_delivery_flags_are_where_they_matter() {
    let mut command = Cli::command();
    command.build();
    let takes = |flag: &str| {
        let mut found = Vec::new();
        fn walk(c: &clap::Command, path: &str, flag: &str, found: &mut Vec<String>) {
            if c.get_subcommands().next().is_none() && c.get_arguments().any(|a| a.get_long() == Some(flag)) {
                found.push(path.trim().to_string());
            }
            for sub in c.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), flag, found);
            }
        }
        walk(&command, "", flag, &mut found);
        found.sort();
        found
    };
    assert_eq!(takes("plugin-deadline"), ["hsm allocate", "hsm distribute", "hsm rekey", "hsm sync", "plugin eval", "renew", "serve"],);
    let bounds = ["hsm allocate", "renew", "resource add", "resource set-attr", "serve"];
    assert_eq!(takes("delivery-root"), bounds);
    assert_eq!(takes("webhook-allow"), bounds);
}

#[test]
fn renew_needs_no_now_but_still_takes_it() {
    use clap::Parser;
    assert!(Cli::try_parse_from(["tenure", "renew"]).is_ok());
    assert!(Cli::try_parse_from(["tenure", "renew", "--now", "--resource", "res_x"]).is_ok());
}

#[test]
fn the_log_format_is_global() {
    use clap::Parser;
    let cli = Cli::try_parse_from(["tenure", "tenant", "list", "--log-format", "json"]).expect("parses");
    assert!(cli.log_format == crate::LogFormat::Json);
    assert!(Cli::try_parse_from(["tenure", "--log-format", "yaml", "tenant", "list"]).is_err());
}
