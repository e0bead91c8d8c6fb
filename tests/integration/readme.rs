//! The documented option tables (docs/configuration.md for the server, docs/userctl.md for
//! userctl) against the binaries' `--help`, both ways: a flag or variable cannot be added,
//! renamed or dropped without the documentation following.

use std::collections::BTreeSet;
use std::process::Command;

const CONFIGURATION: &str = include_str!("../../docs/configuration.md");
const USERCTL: &str = include_str!("../../docs/userctl.md");

/// `--long-flag` tokens in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        let before = rest[..at].chars().last();
        let name: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let starts_a_name = name.starts_with(|c: char| c.is_ascii_lowercase());
        if starts_a_name && before.is_none_or(|c| !c.is_alphanumeric() && c != '-') {
            found.insert(format!("--{name}"));
        }
        rest = &rest[at + 2..];
    }
    found.remove("--help");
    found.remove("--version");
    found
}

/// Environment variable names starting with one of `prefixes`.
fn variables(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|word| prefixes.iter().any(|prefix| word.starts_with(prefix)))
        .map(str::to_owned)
        .collect()
}

/// The rows of the table in `doc` whose header row is `header`.
fn table(doc: &str, header: &str) -> String {
    let start = doc
        .find(header)
        .unwrap_or_else(|| panic!("the documentation has a table headed {header:?}"));
    doc[start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn help(binary: &str, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .env_remove("USERCTL_ADDR")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{binary} {args:?} --help");
    String::from_utf8(output.stdout).unwrap()
}

/// Option lines of a help text (not prose that mentions a flag).
fn option_lines(help: &str) -> String {
    help.lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same(what: &str, in_help: BTreeSet<String>, in_readme: BTreeSet<String>) {
    let missing: Vec<_> = in_help.difference(&in_readme).collect();
    let stale: Vec<_> = in_readme.difference(&in_help).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: in --help but not the documentation: {missing:?}; in the documentation but not --help: {stale:?}"
    );
}

#[test]
fn the_servers_configuration_table_matches_its_help() {
    let help = help(env!("CARGO_BIN_EXE_user-service"), &[]);
    let readme = table(CONFIGURATION, "| Flag | Environment | Default |");
    assert_same(
        "user-service flags",
        flags(&option_lines(&help)),
        flags(&readme),
    );
    assert_same(
        "user-service variables",
        variables(&help, &["USER_SERVICE_"]),
        variables(&readme, &["USER_SERVICE_"]),
    );
}

/// The commands a help text lists, but `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|command| command != "help")
        .collect()
}

#[test]
fn the_userctl_option_table_matches_the_help_of_every_command() {
    let binary = env!("CARGO_BIN_EXE_userctl");
    let top = help(binary, &[]);
    let commands = subcommands(&top);
    assert!(commands.len() >= 10, "{commands:?}");
    let mut all_help = top.clone();
    for command in &commands {
        let text = help(binary, &[command]);
        // And each command's own subcommands (`keys create`, `totp disable`...).
        for sub in subcommands(&text) {
            all_help.push('\n');
            all_help.push_str(&help(binary, &[command, &sub]));
        }
        all_help.push('\n');
        all_help.push_str(&text);
    }
    let readme = table(USERCTL, "| Command | Option | Environment | Meaning |");
    assert_same(
        "userctl flags",
        flags(&option_lines(&all_help)),
        flags(&readme),
    );
    let prefixes = ["USERCTL_", "USER_SERVICE_"];
    assert_same(
        "userctl variables",
        variables(&all_help, &prefixes),
        variables(&readme, &prefixes),
    );
}

#[test]
fn every_option_of_every_command_has_a_description() {
    let binary = env!("CARGO_BIN_EXE_userctl");
    let commands = [
        "create", "get", "update", "delete", "list", "watch", "import", "sync", "login", "token",
        "bench", "health",
    ];
    let mut helps = vec![
        (
            "user-service".to_owned(),
            help(env!("CARGO_BIN_EXE_user-service"), &[]),
        ),
        ("userctl".to_owned(), help(binary, &[])),
    ];
    for command in commands {
        helps.push((format!("userctl {command}"), help(binary, &[command])));
    }
    for (who, text) in helps {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // `--flag` or `-o, --output`; not a `- value:` line listing possible values.
            let option = line.trim_start();
            let is_option = option.starts_with("--")
                || (option.starts_with('-')
                    && option
                        .chars()
                        .nth(1)
                        .is_some_and(|c| c.is_ascii_alphabetic()));
            if !is_option {
                continue;
            }
            // The description follows on the same line (after two spaces) or on the next.
            let same_line = option.split_once("  ").map_or("", |(_, rest)| rest.trim());
            let next = lines.get(i + 1).map_or("", |next| next.trim());
            let described = |text: &str| {
                !text.is_empty() && !text.starts_with(['[', '-']) && !text.starts_with("Possible")
            };
            assert!(
                described(same_line) || described(next),
                "{who}: {line:?} has no description"
            );
        }
    }
}

/// The first `sh` block after `heading` in the README.
fn sh_block_after(heading: &str) -> String {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find(heading).expect("the README has the section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].to_owned()
}

#[tokio::test]
async fn the_readmes_curl_calls_answer_json_as_it_says() {
    let app = crate::helpers::TestApp::spawn().await;
    let token = app.token("readme", user_service::domain::Role::Admin);
    let script = sh_block_after("### The console, and curl with JSON")
        .lines()
        .map(|line| match line.starts_with("TOKEN=") {
            true => format!("TOKEN={token}"),
            false => line.replace("localhost:50051", &app.addr.to_string()),
        })
        .collect::<Vec<_>>()
        .join("\n");

    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .output()
    })
    .await
    .unwrap()
    .expect("bash and curl run");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("each call prints JSON");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        answers[0]["user"]["username"], "cleo",
        "CreateUser: {}",
        answers[0]
    );
    assert_eq!(
        answers[1]["user"]["id"], answers[0]["user"]["id"],
        "LookupUser: {}",
        answers[1]
    );
    assert_eq!(answers[1]["user"]["status"], "USER_STATUS_ACTIVE");
}
