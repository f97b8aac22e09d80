//! `tenure serve --config FILE` and `tenure config check FILE`: `serve`'s flags
//! as the keys of a TOML file.
//!
//! Nothing here names a flag. The keys are the long names of the `serve`
//! subcommand's arguments as clap describes them, each value is checked by its
//! argument's own value parser, and a file's settings reach `serve` as the
//! arguments they stand for, parsed by clap like any other: a flag added to
//! `serve` is a key at once, with the same checks.
//!
//! Precedence, per argument: the command line, then its `TENURE_*` environment
//! variable, then the file, then the flag's default. A repeatable flag given on
//! the command line or in the environment replaces the file's list.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, Subcommand};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The subcommand whose flags a file sets.
const SERVE: &str = "serve";
/// The argument naming the file, which a file cannot set (one file, no includes).
const CONFIG: &str = "config";
/// Far larger than any configuration; bounds what is read and parsed.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// A file holding credentials may be read by its owner only.
const GROUP_OR_OTHERS: u32 = 0o077;
/// A bound on a counted flag (`-vvv`), so a file cannot make a huge command line.
const MAX_COUNT: u64 = 64;
/// A bound on the values of one repeatable key, for the same reason.
const MAX_VALUES: usize = 1024;

/// `tenure config …`.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file for `serve --config`: report every unknown key,
    /// bad value and syntax error with its line, and exit 1 if there is any.
    Check {
        /// The TOML file.
        file: PathBuf,
        /// Print the outcome as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// A place in a file, both counted from 1 (the column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One thing wrong with a file: where (when it is somewhere), the key it
/// concerns (when one), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Option<Position>,
    pub key: Option<String>,
    pub message: String,
}

/// A key of the file and the arguments it stands for.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The key: the flag's long name.
    pub key: String,
    /// The argument's id in clap's matches.
    id: String,
    /// What it adds to the command line: `--key=value` per value, `--key` for a
    /// switch that is on, nothing for one that is off.
    args: Vec<OsString>,
    /// Whether the value carries a credential (the file must then be private).
    secret: bool,
    at: Position,
}

/// The outcome of checking a file.
#[derive(Debug)]
pub struct Checked {
    pub file: PathBuf,
    pub settings: Vec<Setting>,
    pub problems: Vec<Problem>,
}

impl Checked {
    /// `FILE:LINE:COLUMN: message`, one line per problem.
    pub fn report(&self) -> String {
        let file = self.file.display();
        self.problems
            .iter()
            .map(|p| match p.at {
                Some(at) => format!("{file}:{}:{}: {}\n", at.line, at.column, p.message),
                None => format!("{file}: {}\n", p.message),
            })
            .collect()
    }

    /// The outcome as JSON: `{"file", "ok", "settings", "keys", "problems"}`.
    pub fn json(&self) -> serde_json::Value {
        let problems: Vec<serde_json::Value> = self
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "line": p.at.map(|a| a.line),
                    "column": p.at.map(|a| a.column),
                    "key": p.key,
                    "message": p.message,
                })
            })
            .collect();
        let keys: Vec<&str> = self.settings.iter().map(|s| s.key.as_str()).collect();
        serde_json::json!({
            "file": self.file.display().to_string(),
            "ok": self.problems.is_empty(),
            "settings": self.settings.len(),
            "keys": keys,
            "problems": problems,
        })
    }

    fn summary(&self) -> String {
        let n = self.problems.len();
        format!("{}: {n} problem{}", self.file.display(), if n == 1 { "" } else { "s" })
    }
}

/// `tenure config check FILE [--json]`: every problem on standard output, and
/// an error (exit status 1) if there is any.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { file, json } => {
            let checked = check_file(&<crate::Cli as clap::CommandFactory>::command(), &file);
            if json {
                println!("{}", checked.json());
            } else if checked.problems.is_empty() {
                let n = checked.settings.len();
                println!("{}: ok, {n} setting{}", file.display(), if n == 1 { "" } else { "s" });
            } else {
                print!("{}", checked.report());
            }
            if !checked.problems.is_empty() {
                anyhow::bail!("{}", checked.summary());
            }
            Ok(())
        }
    }
}

/// Parses the command line as `C`, with the settings of `serve --config FILE`
/// added where neither a flag nor its environment variable set them. A file
/// with any problem is reported and the process exits 1 before anything starts.
pub fn parse<C: clap::Parser>() -> C {
    let mut command = C::command();
    let (argv, file) = match with_file_settings(&command, std::env::args_os().collect()) {
        Ok(resolved) => resolved,
        Err(report) => {
            eprint!("{report}");
            std::process::exit(1);
        }
    };
    let matches = command.try_get_matches_from_mut(&argv).unwrap_or_else(|e| {
        // When the command line alone parses, the file's settings made the error (a
        // key that needs another): say where they came from.
        if let Some(file) = &file
            && C::command().try_get_matches_from(std::env::args_os()).is_ok()
        {
            eprintln!("tenure: with the settings of {}:", file.display());
        }
        e.exit()
    });
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// `argv` with the settings of the file `serve --config` names appended (those
/// of arguments the command line and the environment leave unset), and the
/// file; `argv` unchanged when there is no file. The error is the report of a
/// file with problems.
fn with_file_settings(root: &Command, argv: Vec<OsString>) -> Result<(Vec<OsString>, Option<PathBuf>), String> {
    // Lenient: a requirement the file meets (`--hsm-module` here, the token there)
    // must not fail this first look. The strict parse of the merged line follows.
    let Ok(matches) = root.clone().ignore_errors(true).try_get_matches_from(&argv) else {
        return Ok((argv, None));
    };
    let Some(serve) = matches.subcommand_matches(SERVE) else {
        return Ok((argv, None));
    };
    let Some(file) = serve.try_get_raw(CONFIG).ok().flatten().and_then(|mut values| values.next()) else {
        return Ok((argv, None));
    };
    let file = PathBuf::from(file);
    let checked = check_file(root, &file);
    if !checked.problems.is_empty() {
        return Err(format!(
            "{}tenure: {}; not starting (`tenure config check {}` lists them)\n",
            checked.report(),
            checked.summary(),
            file.display()
        ));
    }
    Ok((merge(argv, serve, &checked.settings), Some(file)))
}

/// `argv` with each setting's arguments appended unless the command line or the
/// environment set its argument (`serve` takes no positional argument, so the end
/// of the line is still `serve`'s).
fn merge(mut argv: Vec<OsString>, serve: &ArgMatches, settings: &[Setting]) -> Vec<OsString> {
    for setting in settings {
        let overridden = matches!(serve.value_source(&setting.id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if !overridden {
            argv.extend(setting.args.iter().cloned());
        }
    }
    argv
}

/// Reads and checks `file` against the `serve` subcommand of `root`: syntax,
/// keys, values, and that a file holding credentials is private.
pub fn check_file(root: &Command, file: &Path) -> Checked {
    let mut checked = Checked { file: file.to_path_buf(), settings: Vec::new(), problems: Vec::new() };
    let (text, mode) = match read_bounded(file) {
        Ok(read) => read,
        Err(message) => {
            checked.problems.push(Problem { at: None, key: None, message });
            return checked;
        }
    };
    let text = match String::from_utf8(text) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let at = position(&String::from_utf8_lossy(valid), valid.len());
            checked.problems.push(Problem { at: Some(at), key: None, message: "not UTF-8 text".into() });
            return checked;
        }
    };
    (checked.settings, checked.problems) = check_text(root, &text);
    // Credentials fail closed: a readable file is refused, not just warned about.
    if mode & GROUP_OR_OTHERS != 0 {
        for secret in checked.settings.iter().filter(|s| s.secret) {
            checked.problems.push(Problem {
                at: Some(secret.at),
                key: Some(secret.key.clone()),
                message: format!(
                    "`{}` holds a credential, but the file is open to group or others (mode {:03o}): run `chmod 600 {}`",
                    secret.key,
                    mode & 0o777,
                    file.display()
                ),
            });
        }
    }
    checked.problems.sort_by_key(|p| p.at);
    checked
}

/// The file's bytes (at most [`MAX_FILE_BYTES`]) and its permission bits, both
/// of the one file opened.
fn read_bounded(file: &Path) -> Result<(Vec<u8>, u32), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes; a configuration file holds at most {MAX_FILE_BYTES}", meta.len()));
    }
    let mut text = Vec::new();
    // Bounded again while reading: the file may grow after the check.
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut text).map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes, the most a configuration file holds"));
    }
    Ok((text, meta.permissions().mode()))
}

/// Checks TOML text against the `serve` subcommand of `root`: every syntax
/// error, unknown key and bad value, in the order of the file.
pub fn check_text(root: &Command, text: &str) -> (Vec<Setting>, Vec<Problem>) {
    let serve = serve_command(root);
    let probe = probe_command(&serve);
    let (table, errors) = DeTable::parse_recoverable(text);
    let mut problems: Vec<Problem> = errors
        .iter()
        .map(|e| Problem {
            at: e.span().map(|s| position(text, s.start)),
            key: None,
            message: format!("syntax: {}", e.message().trim_end()),
        })
        .collect();
    // A value the parser recovered from an error says nothing more about it.
    let broken_lines: Vec<usize> = problems.iter().filter_map(|p| p.at.map(|a| a.line)).collect();
    let mut settings = Vec::new();
    for (key, value) in table.get_ref().iter() {
        match setting(&serve, &probe, key.get_ref(), position(text, key.span().start), value, text) {
            Ok(setting) => settings.push(setting),
            Err(found) => problems.extend(found.into_iter().filter(|p| !p.at.is_some_and(|a| broken_lines.contains(&a.line)))),
        }
    }
    problems.sort_by_key(|p| p.at);
    (settings, problems)
}

/// The `serve` subcommand of `root`, built so that global arguments are among its own.
fn serve_command(root: &Command) -> Command {
    let mut root = root.clone();
    root.build();
    root.find_subcommand(SERVE).cloned().unwrap_or_else(|| Command::new(SERVE))
}

/// `serve` for checking one value at a time: no environment (its values are not
/// the file's), no colours in messages.
fn probe_command(serve: &Command) -> Command {
    serve.clone().mut_args(|a| a.env(None)).no_binary_name(true).color(clap::ColorChoice::Never)
}

/// The arguments a file may set: `serve`'s flags with a long name but `--config`,
/// `--help` and `--version`.
fn settable(serve: &Command) -> impl Iterator<Item = &Arg> {
    serve.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !a.is_positional()
            && a.get_id() != CONFIG
            && matches!(a.get_action(), ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count)
    })
}

/// The setting one key of the file makes, or its problems.
fn setting(
    serve: &Command,
    probe: &Command,
    key: &str,
    key_at: Position,
    value: &Spanned<DeValue<'_>>,
    text: &str,
) -> Result<Setting, Vec<Problem>> {
    let at_key = Some(key_at);
    let problem = |at: Option<Position>, message: String| vec![Problem { at, key: Some(key.to_string()), message }];
    let value_at = |v: &Spanned<DeValue<'_>>| Some(position(text, v.span().start));
    let Some(arg) = settable(serve).find(|a| a.get_long() == Some(key)) else {
        let message = if key == CONFIG {
            "`config` names the file itself; a configuration file cannot set it".to_string()
        } else if let DeValue::Table(_) = value.get_ref() {
            format!("`{key}` is a table; every setting is a top-level key (`listen = \"…\"`), outside any [section]")
        } else {
            match suggestion(key, settable(serve).filter_map(Arg::get_long)) {
                Some(near) => format!("unknown key `{key}` (did you mean `{near}`?)"),
                None => format!("unknown key `{key}`: keys are the long names of `tenure serve`'s flags (see `tenure serve --help`)"),
            }
        };
        return Err(problem(at_key, message));
    };
    let flag = format!("--{key}");
    let args = match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value.get_ref() {
            DeValue::Boolean(true) => vec![flag.into()],
            DeValue::Boolean(false) => Vec::new(),
            other => {
                return Err(problem(
                    value_at(value),
                    format!("`{key}` is a switch: true or false, not a{} {}", article(other), other.type_str()),
                ));
            }
        },
        ArgAction::Count => match value.get_ref() {
            DeValue::Integer(i) => match integer(i).and_then(|n| n.parse::<u64>().ok()).filter(|n| *n <= MAX_COUNT) {
                Some(n) => std::iter::repeat_n(OsString::from(&flag), n as usize).collect(),
                None => return Err(problem(value_at(value), format!("`{key}` counts: an integer from 0 to {MAX_COUNT}"))),
            },
            other => {
                return Err(problem(value_at(value), format!("`{key}` counts: an integer, not a{} {}", article(other), other.type_str())));
            }
        },
        action => {
            let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
                DeValue::Array(items) if matches!(action, ArgAction::Append) => items.iter().collect(),
                DeValue::Array(_) => {
                    return Err(problem(value_at(value), format!("`{key}` takes one value, not an array")));
                }
                _ => vec![value],
            };
            if items.len() > MAX_VALUES {
                return Err(problem(value_at(value), format!("`{key}` lists {} values; at most {MAX_VALUES}", items.len())));
            }
            let mut args = Vec::new();
            let mut problems = Vec::new();
            for item in items {
                match scalar(item.get_ref())
                    .map_err(|m| format!("`{key}`: {m}"))
                    .and_then(|v| probe_value(probe, key, &v, arg.is_hide_env_values_set()).map(|()| v))
                {
                    Ok(v) => args.push(OsString::from(format!("{flag}={v}"))),
                    Err(message) => problems.extend(problem(value_at(item), message)),
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            args
        }
    };
    let secret = is_secret(arg, value.get_ref());
    Ok(Setting { key: key.to_string(), id: arg.get_id().to_string(), args, secret, at: key_at })
}

/// A TOML value as the text a command line would give.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => integer(i).ok_or_else(|| format!("the integer {i} is out of range")),
        DeValue::Float(f) => Ok(f.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("a{} {} is no flag's value: give a string, number or boolean", article(other), other.type_str())),
    }
}

/// An integer in decimal, whatever its radix in the file (`0x1F`, `0o17`, `0b1`).
fn integer(i: &toml::de::DeInteger<'_>) -> Option<String> {
    i128::from_str_radix(i.as_str(), i.radix()).ok().map(|n| n.to_string())
}

fn article(value: &DeValue<'_>) -> &'static str {
    if matches!(value, DeValue::Integer(_) | DeValue::Array(_)) { "n" } else { "" }
}

/// Runs `value` through the argument's own parser (and its delimiter, if it
/// splits values): clap's message when it refuses it. For an argument whose
/// values are `hidden` (a credential may be in them: `database`), only the
/// parser's own message, which never repeats a password, not clap's, which
/// quotes the value whole.
fn probe_value(probe: &Command, key: &str, value: &str, hidden: bool) -> Result<(), String> {
    use clap::error::ErrorKind;
    match probe.clone().try_get_matches_from([format!("--{key}={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ErrorKind::InvalidValue
            | ErrorKind::ValueValidation
            | ErrorKind::InvalidUtf8
            | ErrorKind::NoEquals
            | ErrorKind::TooManyValues
            | ErrorKind::TooFewValues
            | ErrorKind::WrongNumberOfValues => {
                if hidden {
                    let why = std::error::Error::source(&e).map_or_else(|| "refused".to_string(), |s| s.to_string());
                    return Err(format!("invalid value for `--{key}` (not repeated here): {why}"));
                }
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                Err(first.strip_prefix("error: ").unwrap_or(first).to_string())
            }
            // Another argument's requirement (`--hsm-token` wants `--hsm-module`): the
            // file's settings together are checked when `serve` parses them.
            _ => Ok(()),
        },
    }
}

/// Whether a setting carries a credential: an argument whose environment
/// values clap hides is a secret unless its value is a URL (or libpq
/// connection string) without a password.
fn is_secret(arg: &Arg, value: &DeValue<'_>) -> bool {
    if !arg.is_hide_env_values_set() {
        return false;
    }
    match value {
        DeValue::String(s) if s.contains("://") || s.contains('=') => carries_password(s),
        _ => true,
    }
}

/// `scheme://user:password@host/…`, `…?password=…`, or `password=…` among
/// libpq's `key=value` pairs.
fn carries_password(url: &str) -> bool {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let in_userinfo = authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'));
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
        in_userinfo || query.split('&').any(|kv| kv.trim().starts_with("password="))
    } else {
        url.split_whitespace().any(|kv| kv.starts_with("password"))
    }
}

/// The closest key to an unknown one, when it is close enough to be a slip
/// (`admin_listen`, `lisen`).
fn suggestion<'a>(unknown: &str, keys: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let normalized = unknown.to_ascii_lowercase().replace('_', "-");
    let (distance, key) = keys.map(|k| (edit_distance(&normalized, k), k)).min()?;
    (distance <= 2.max(normalized.chars().count() / 4)).then_some(key)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The line and column of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser as _};

    /// The real command line: `tenure` and its `serve`.
    fn root() -> Command {
        crate::Cli::command()
    }

    fn problems(text: &str) -> Vec<Problem> {
        check_text(&root(), text).1
    }

    /// What `serve` receives for `argv` (after `tenure serve`) with `text` as the file.
    fn serve_args(text: &str, argv: &[&str]) -> crate::ServeArgs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("tenure.toml");
        std::fs::write(&file, text).expect("write the file");
        let mut line: Vec<OsString> = vec!["tenure".into(), "serve".into(), "--config".into(), file.clone().into()];
        line.extend(argv.iter().map(OsString::from));
        let (line, from) = with_file_settings(&root(), line).expect("the file has no problem");
        assert_eq!(from.as_deref(), Some(file.as_path()));
        match crate::Cli::try_parse_from(line).expect("the merged command line parses").command {
            crate::Command::Serve(args) => args,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_line_with_the_key_meant() {
        let found = problems("listen = \"127.0.0.1:14000\"\n\n  admin-lissen = \"127.0.0.1:1\"\nrenewal_interval = 5\nfrobnicate = 1\n");
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(found[0].at, Some(Position { line: 3, column: 3 }));
        assert_eq!(found[0].message, "unknown key `admin-lissen` (did you mean `admin-listen`?)");
        assert_eq!(found[1].at, Some(Position { line: 4, column: 1 }));
        assert!(found[1].message.contains("did you mean `renewal-interval`?"), "{}", found[1].message);
        assert_eq!(found[2].at, Some(Position { line: 5, column: 1 }));
        assert!(found[2].message.starts_with("unknown key `frobnicate`: keys are the long names"), "{}", found[2].message);
    }

    #[test]
    fn a_bad_value_is_reported_at_its_line_with_the_value_parser_s_message() {
        let found = problems(
            "max-streams = 0\nlisten = \"nowhere\"\neab-required = \"yes\"\nadmin-listen = [\"127.0.0.1:1\"]\nhostname = [\"ok.example\", 7, {}]\n",
        );
        let at = |line, column| Some(Position { line, column });
        assert_eq!(found.len(), 5, "{found:#?}");
        assert_eq!(found[0].at, at(1, 15));
        assert!(found[0].message.contains("--max-streams") && found[0].message.contains("1..=10000"), "{}", found[0].message);
        assert_eq!(found[1].at, at(2, 10));
        assert!(found[1].message.starts_with("invalid value 'nowhere' for '--listen <LISTEN>'"), "{}", found[1].message);
        assert_eq!(found[2].at, at(3, 16));
        assert_eq!(found[2].message, "`eab-required` is a switch: true or false, not a string");
        assert_eq!(found[3].at, at(4, 16));
        assert_eq!(found[3].message, "`admin-listen` takes one value, not an array");
        // The one bad item of an array, not the array: the integer is a fine host name to clap.
        assert_eq!(found[4].at, at(5, 30));
        assert!(found[4].message.starts_with("`hostname`: a table is no flag's value"), "{}", found[4].message);
    }

    #[test]
    fn syntax_errors_are_reported_with_the_other_problems() {
        let found = problems("listen = = 1\nbogus = 2\n[serve]\nlisten = \"127.0.0.1:1\"\n");
        let lines: Vec<usize> = found.iter().filter_map(|p| p.at.map(|a| a.line)).collect();
        assert!(found[0].message.starts_with("syntax: "), "{found:#?}");
        assert_eq!(found[0].at.map(|a| a.line), Some(1));
        assert!(lines.contains(&2) && lines.contains(&3), "{found:#?}");
        assert!(found.iter().any(|p| p.message.contains("`serve` is a table")), "{found:#?}");
    }

    #[test]
    fn the_serve_time_rules_are_value_rules_the_check_reports() {
        let found = problems("renewal-fraction = 2\nrenewal-interval = 0\nrenewal-rate = -1\nprovisioning-rate = 1e300\n");
        let lines: Vec<usize> = found.iter().filter_map(|p| p.at.map(|a| a.line)).collect();
        assert_eq!(lines, [1, 2, 3, 4], "{found:#?}");
        assert!(found[0].message.contains("strictly between 0 and 1"), "{}", found[0].message);
    }

    #[test]
    fn the_file_cannot_name_another() {
        let found = problems("config = \"other.toml\"\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("cannot set it"), "{}", found[0].message);
    }

    #[test]
    fn a_repeatable_flag_takes_an_array_or_one_value() {
        let args = serve_args("hostname = [\"a.example\", \"b.example\"]\n", &[]);
        assert_eq!(args.hostnames, ["a.example", "b.example"]);
        assert_eq!(serve_args("hostname = \"a.example\"\n", &[]).hostnames, ["a.example"]);
        // The command line's list replaces the file's.
        assert_eq!(serve_args("hostname = [\"a.example\", \"b.example\"]\n", &["--hostname", "c.example"]).hostnames, ["c.example"]);
    }

    #[test]
    fn a_switch_takes_a_boolean() {
        let args = serve_args("eab-required = true\nreuse-valid-authorizations = false\n", &[]);
        assert!(args.eab_required);
        assert!(!args.reuse_valid_authorizations);
        // A switch off in the file stays on when the command line gives it.
        assert!(serve_args("eab-required = false\n", &["--eab-required"]).eab_required);
    }

    #[test]
    fn numbers_reach_their_flags_whatever_their_toml_type() {
        let args = serve_args("renewal-interval = 5\nrenewal-fraction = 0.5\nmax-streams = 0x40\nrenewal-rate = 2.5e1\n", &[]);
        assert_eq!(args.renewal_interval, 5.0);
        assert_eq!(args.renewal_fraction, 0.5);
        assert_eq!(args.max_streams, 64);
        assert_eq!(args.renewal_rate, Some(25.0));
    }

    #[test]
    fn the_file_is_overridden_by_the_environment_and_the_environment_by_a_flag() {
        // A command of its own with a variable no other test reads: the real
        // `serve`'s variables are read by every test that parses a command line.
        const VAR: &str = "TENURE_CONFIG_FILE_TEST_PRECEDENCE";
        // Built for each parse: clap reads an argument's variable when the argument is made.
        let root = || {
            Command::new("t").subcommand(
                Command::new(SERVE)
                    .arg(Arg::new(CONFIG).long(CONFIG))
                    .arg(Arg::new("listen").long("listen").env(VAR).default_value("default"))
                    .arg(Arg::new("admin-listen").long("admin-listen").default_value("default"))
                    .arg(Arg::new("eab").long("eab").env("TENURE_CONFIG_FILE_TEST_EAB").action(ArgAction::SetTrue)),
            )
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "listen = \"file\"\nadmin-listen = \"file\"\neab = true\n").expect("write");
        let effective = |extra: &[&str]| {
            let mut argv: Vec<OsString> = vec!["t".into(), SERVE.into(), "--config".into(), file.clone().into()];
            argv.extend(extra.iter().map(OsString::from));
            let (argv, _) = with_file_settings(&root(), argv).expect("no problem");
            let matches = root().try_get_matches_from(argv).expect("parses");
            let serve = matches.subcommand_matches(SERVE).expect("serve").clone();
            let get = |id: &str| serve.get_one::<String>(id).cloned().unwrap_or_default();
            (get("listen"), get("admin-listen"), serve.get_flag("eab"))
        };
        assert_eq!(effective(&[]), ("file".into(), "file".into(), true));
        // SAFETY: only this test reads or writes these variables.
        unsafe {
            std::env::set_var(VAR, "environment");
            std::env::set_var("TENURE_CONFIG_FILE_TEST_EAB", "false");
        }
        // An environment variable beats the file, also for a switch it turns off.
        assert_eq!(effective(&[]), ("environment".into(), "file".into(), false));
        // A flag beats both.
        assert_eq!(effective(&["--listen", "flag", "--admin-listen=flag"]), ("flag".into(), "flag".into(), false));
        // SAFETY: as above.
        unsafe {
            std::env::remove_var(VAR);
            std::env::remove_var("TENURE_CONFIG_FILE_TEST_EAB");
        }
    }

    #[test]
    fn a_requirement_the_file_meets_is_met() {
        let args = serve_args("hsm-token = \"ca\"\nhsm-pin-file = \"/etc/pin\"\n", &["--hsm-module", "/lib/p11.so"]);
        assert_eq!(args.hsm.hsm_token.as_deref(), Some("ca"));
        assert_eq!(args.hsm.hsm_module.as_deref(), Some(Path::new("/lib/p11.so")));
    }

    #[test]
    fn a_refused_database_url_is_not_repeated_with_its_password() {
        let found = problems("database = \"mysql://tenure:s3cret@db.example/tenure\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].message.starts_with("invalid value for `--database` (not repeated here): "), "{}", found[0].message);
        assert!(!found[0].message.contains("s3cret"), "{}", found[0].message);
    }

    #[test]
    fn a_database_password_needs_a_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("tenure.toml");
        let check = |text: &str, mode: u32| {
            std::fs::write(&file, text).expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            check_file(&root(), &file).problems
        };
        let secret = "listen = \"127.0.0.1:1\"\ndatabase = \"postgres://tenure:s3cret@db.example/tenure\"\n";
        let found = check(secret, 0o640);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].at, Some(Position { line: 2, column: 1 }));
        assert!(found[0].message.contains(&format!("chmod 600 {}", file.display())), "{}", found[0].message);
        assert!(found[0].message.contains("mode 640"), "{}", found[0].message);
        assert!(!found[0].message.contains("s3cret"), "{}", found[0].message);
        assert!(check(secret, 0o600).is_empty());
        assert_eq!(check(secret, 0o604).len(), 1);
        // No password, nothing to protect.
        assert!(check("database = \"postgres://tenure@db.example/tenure\"\n", 0o644).is_empty());
    }

    #[test]
    fn passwords_are_found_in_each_form_of_connection_string() {
        assert!(carries_password("postgres://u:p@h/db"));
        assert!(carries_password("postgres://u@h/db?sslmode=require&password=p"));
        assert!(carries_password("host=h user=u password=p"));
        assert!(!carries_password("postgres://u@h/db"));
        assert!(!carries_password("postgres://h:5432/db"));
        assert!(!carries_password("host=h user=u"));
    }

    #[test]
    fn a_file_too_large_is_refused_unread() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("big.toml");
        std::fs::write(&file, vec![b'#'; MAX_FILE_BYTES as usize + 1]).expect("write");
        let found = check_file(&root(), &file).problems;
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("at most"), "{}", found[0].message);
    }

    const EXAMPLE: &str = include_str!("../examples/tenure.toml");

    #[test]
    fn the_example_names_every_serve_flag() {
        let serve = serve_command(&root());
        let missing: Vec<&str> = settable(&serve)
            .filter_map(Arg::get_long)
            .filter(|long| !EXAMPLE.lines().any(|l| l.trim_start_matches("# ").starts_with(&format!("{long} = "))))
            .collect();
        assert!(missing.is_empty(), "examples/tenure.toml lacks a line for {missing:?}");
    }

    #[test]
    fn the_example_passes_the_check_as_it_is_and_with_every_setting_on() {
        let found = problems(EXAMPLE);
        assert!(found.is_empty(), "{found:#?}");
        // Every commented-out setting, uncommented: each example value is valid
        // (but a directory that exists only on a deployed host).
        let on: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(setting) if setting.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => setting,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let (settings, found) = check_text(&root(), &on);
        let found: Vec<&Problem> = found.iter().filter(|p| p.key.as_deref() != Some("delivery-root")).collect();
        assert!(found.is_empty(), "{found:#?}");
        let all = settable(&serve_command(&root())).count();
        assert_eq!(settings.len() + 1, all, "every key but delivery-root is set");
    }

    #[test]
    fn close_keys_are_suggested_and_far_ones_are_not() {
        let keys = ["listen", "admin-listen", "renewal-interval"];
        assert_eq!(suggestion("lisen", keys.into_iter()), Some("listen"));
        assert_eq!(suggestion("Admin_Listen", keys.into_iter()), Some("admin-listen"));
        assert_eq!(suggestion("database", keys.into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
