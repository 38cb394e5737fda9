//! Downstream task files (one JSON object per line) and converters from benchmarks' released formats.
//!
//! Two kinds of task, one kind per file:
//! - multiple choice: `{"context": str, "choices": [str, ...], "label": int}`;
//! - cloze: `{"context": str, "target": str}`.
//!
//! Each choice or target is the literal text that follows the context, usually with a leading space
//! (`" Paris"`); see `train::task` for how context and continuation are tokenized.
//! Converters turn HellaSwag, ARC, PIQA and LAMBADA files into this format ([`convert`]).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A bad task file or converter input; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A line that is not a valid item.
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A file cannot be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file-level problem (empty, mismatched label file).
    #[error("{}: {msg}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

fn line_err(path: &Path, line: usize, msg: impl Into<String>) -> TaskError {
    TaskError::Line {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn file_err(path: &Path, msg: impl Into<String>) -> TaskError {
    TaskError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// One item of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskItem {
    /// Choose the continuation of `context` among `choices`; `label` is the index of the right one.
    MultipleChoice {
        /// The prompt.
        context: String,
        /// The candidate continuations (at least one, none empty).
        choices: Vec<String>,
        /// Index of the right choice.
        label: usize,
    },
    /// Reproduce `target` after `context`.
    Cloze {
        /// The prompt.
        context: String,
        /// The continuation to reproduce (not empty).
        target: String,
    },
}

/// The kind of a task file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// `context`, `choices`, `label`.
    MultipleChoice,
    /// `context`, `target`.
    Cloze,
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::MultipleChoice => "multiple choice",
            TaskKind::Cloze => "cloze",
        })
    }
}

impl TaskItem {
    /// Multiple choice or cloze.
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskItem::MultipleChoice { .. } => TaskKind::MultipleChoice,
            TaskItem::Cloze { .. } => TaskKind::Cloze,
        }
    }
}

/// A task file read and checked.
#[derive(Clone, Debug)]
pub struct TaskFile {
    /// The task's name: the file name without `.jsonl` (it names the `err_<name>` sweep column).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Its kind (every line has it).
    pub kind: TaskKind,
    /// The items, in file order.
    pub items: Vec<TaskItem>,
}

/// Raw line: every field optional, so that a missing one gets its own message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    context: Option<String>,
    choices: Option<Vec<String>>,
    label: Option<i64>,
    target: Option<String>,
}

/// Parse and check one line of a task file.
pub fn parse_item(text: &str, path: &Path, line: usize) -> Result<TaskItem, TaskError> {
    let raw: RawItem = serde_json::from_str(text)
        .map_err(|e| line_err(path, line, format!("not a task item: {e}")))?;
    let context = raw
        .context
        .ok_or_else(|| line_err(path, line, "missing \"context\""))?;
    match (raw.choices, raw.target) {
        (Some(_), Some(_)) => Err(line_err(
            path,
            line,
            "has both \"choices\" (multiple choice) and \"target\" (cloze)",
        )),
        (None, None) => Err(line_err(
            path,
            line,
            "needs \"choices\" and \"label\" (multiple choice) or \"target\" (cloze)",
        )),
        (Some(choices), None) => {
            if choices.is_empty() {
                return Err(line_err(path, line, "empty \"choices\" list"));
            }
            if let Some(i) = choices.iter().position(|c| c.trim().is_empty()) {
                return Err(line_err(path, line, format!("choice {i} is empty")));
            }
            let label = raw
                .label
                .ok_or_else(|| line_err(path, line, "multiple-choice item without \"label\""))?;
            if label < 0 || label as usize >= choices.len() {
                return Err(line_err(
                    path,
                    line,
                    format!(
                        "label {label} is out of range for {} choices (0..{})",
                        choices.len(),
                        choices.len() - 1
                    ),
                ));
            }
            Ok(TaskItem::MultipleChoice {
                context,
                choices,
                label: label as usize,
            })
        }
        (None, Some(target)) => {
            if raw.label.is_some() {
                return Err(line_err(path, line, "a cloze item has no \"label\""));
            }
            if target.trim().is_empty() {
                return Err(line_err(path, line, "empty \"target\""));
            }
            Ok(TaskItem::Cloze { context, target })
        }
    }
}

/// Read a task file: one item per non-blank line, all of one kind; `limit` keeps the first N items.
pub fn read_task(path: &Path, limit: Option<usize>) -> Result<TaskFile, TaskError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut items = Vec::new();
    let mut kind = None;
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|n| items.len() >= n) {
            break;
        }
        let item = parse_item(l, path, i + 1)?;
        match kind {
            None => kind = Some(item.kind()),
            Some(k) if k != item.kind() => {
                return Err(line_err(
                    path,
                    i + 1,
                    format!("a {} item in a {k} task (one kind per file)", item.kind()),
                ))
            }
            _ => {}
        }
        items.push(item);
    }
    let kind = kind.ok_or_else(|| file_err(path, "no task items"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".jsonl").unwrap_or(n).to_string())
        .unwrap_or_else(|| "task".into());
    Ok(TaskFile {
        name,
        path: path.to_path_buf(),
        kind,
        items,
    })
}

/// The benchmark formats `isoflop data task convert` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// HellaSwag's jsonl (`ctx_a`, `ctx_b`, `activity_label`, `endings`, `label`).
    Hellaswag,
    /// ARC's jsonl (`question.stem`, `question.choices[].label/text`, `answerKey`).
    Arc,
    /// PIQA's jsonl (`goal`, `sol1`, `sol2`) with its labels file (one 0/1 per line).
    Piqa,
    /// LAMBADA: plain text (one passage per line) or jsonl with `text`; the last word is the target.
    Lambada,
}

/// HellaSwag's cleanup of WikiHow text, as lm-evaluation-harness does it: ` [title]` becomes `. `,
/// other bracketed tags are dropped, double spaces collapse.
fn hellaswag_clean(s: &str) -> String {
    let s = s.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(s.len());
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.replace("  ", " ").trim().to_string()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn json_line(text: &str, path: &Path, line: usize) -> Result<serde_json::Value, TaskError> {
    serde_json::from_str(text).map_err(|e| line_err(path, line, format!("not JSON: {e}")))
}

fn str_field<'a>(
    v: &'a serde_json::Value,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<&'a str, TaskError> {
    v.get(key)
        .and_then(|x| x.as_str())
        .ok_or_else(|| line_err(path, line, format!("missing string field \"{key}\"")))
}

/// An integer label given as a number or a numeric string.
fn int_field(v: &serde_json::Value, key: &str, path: &Path, line: usize) -> Result<i64, TaskError> {
    match v.get(key) {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| line_err(path, line, format!("missing integer field \"{key}\"")))
}

/// Check a converted multiple-choice item the way [`parse_item`] checks a task line.
fn mc(
    context: String,
    choices: Vec<String>,
    label: i64,
    path: &Path,
    line: usize,
) -> Result<TaskItem, TaskError> {
    let j = serde_json::json!({"context": context, "choices": choices, "label": label});
    parse_item(&j.to_string(), path, line)
}

/// Convert a benchmark file into task items. `labels` is PIQA's labels file (required for PIQA, refused
/// otherwise). Blank lines are skipped; every error names the input file and line.
pub fn convert(
    format: SourceFormat,
    input: &Path,
    labels: Option<&Path>,
) -> Result<Vec<TaskItem>, TaskError> {
    let text = std::fs::read_to_string(input).map_err(io_err(input))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return Err(file_err(input, "no lines to convert"));
    }
    if labels.is_some() && format != SourceFormat::Piqa {
        return Err(file_err(
            input,
            "a labels file is only read for --format piqa",
        ));
    }
    let mut out = Vec::with_capacity(lines.len());
    match format {
        SourceFormat::Hellaswag => {
            for (n, l) in lines {
                let v = json_line(l, input, n)?;
                let ctx = format!(
                    "{} {}",
                    str_field(&v, "ctx_a", input, n)?,
                    capitalize(str_field(&v, "ctx_b", input, n)?)
                );
                let act = v
                    .get("activity_label")
                    .and_then(|x| x.as_str())
                    .unwrap_or("");
                let context = hellaswag_clean(&format!("{act}: {ctx}"));
                let endings = v
                    .get("endings")
                    .and_then(|e| e.as_array())
                    .ok_or_else(|| line_err(input, n, "missing array field \"endings\""))?;
                let choices = endings
                    .iter()
                    .map(|e| {
                        e.as_str()
                            .map(|s| format!(" {}", hellaswag_clean(s)))
                            .ok_or_else(|| line_err(input, n, "an ending is not a string"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let label = int_field(&v, "label", input, n).map_err(|_| {
                    line_err(input, n, "no \"label\" (HellaSwag's test split has none)")
                })?;
                out.push(mc(context, choices, label, input, n)?);
            }
        }
        SourceFormat::Arc => {
            for (n, l) in lines {
                let v = json_line(l, input, n)?;
                let q = v
                    .get("question")
                    .ok_or_else(|| line_err(input, n, "missing object \"question\""))?;
                let stem = str_field(q, "stem", input, n)?;
                let cs = q
                    .get("choices")
                    .and_then(|c| c.as_array())
                    .ok_or_else(|| line_err(input, n, "missing array \"question.choices\""))?;
                let mut labels_seen = Vec::new();
                let mut choices = Vec::new();
                for c in cs {
                    labels_seen.push(str_field(c, "label", input, n)?.to_string());
                    choices.push(format!(" {}", str_field(c, "text", input, n)?));
                }
                let key = str_field(&v, "answerKey", input, n)?;
                let label = labels_seen.iter().position(|x| x == key).ok_or_else(|| {
                    line_err(
                        input,
                        n,
                        format!(
                            "answerKey {key:?} is not one of the choice labels {labels_seen:?}"
                        ),
                    )
                })?;
                let context = format!("Question: {stem}\nAnswer:");
                out.push(mc(context, choices, label as i64, input, n)?);
            }
        }
        SourceFormat::Piqa => {
            let lp = labels.ok_or_else(|| {
                file_err(
                    input,
                    "PIQA needs its labels file (e.g. train-labels.lst) after the input",
                )
            })?;
            let lt = std::fs::read_to_string(lp).map_err(io_err(lp))?;
            let labs: Vec<(usize, &str)> = lt
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim()))
                .filter(|(_, l)| !l.is_empty())
                .collect();
            if labs.len() != lines.len() {
                return Err(file_err(
                    lp,
                    format!(
                        "{} labels for {} items in {}",
                        labs.len(),
                        lines.len(),
                        input.display()
                    ),
                ));
            }
            for ((n, l), (ln, lab)) in lines.into_iter().zip(labs) {
                let v = json_line(l, input, n)?;
                let goal = str_field(&v, "goal", input, n)?;
                let choices = vec![
                    format!(" {}", str_field(&v, "sol1", input, n)?),
                    format!(" {}", str_field(&v, "sol2", input, n)?),
                ];
                let label: i64 = lab
                    .parse()
                    .map_err(|_| line_err(lp, ln, format!("label {lab:?} is not 0 or 1")))?;
                if !(0..=1).contains(&label) {
                    return Err(line_err(lp, ln, format!("label {label} is not 0 or 1")));
                }
                out.push(mc(
                    format!("Question: {goal}\nAnswer:"),
                    choices,
                    label,
                    input,
                    n,
                )?);
            }
        }
        SourceFormat::Lambada => {
            for (n, l) in lines {
                let passage = if l.trim_start().starts_with('{') {
                    str_field(&json_line(l, input, n)?, "text", input, n)?.to_string()
                } else {
                    l.to_string()
                };
                let passage = passage.trim_end();
                let cut = passage.rfind(char::is_whitespace).ok_or_else(|| {
                    line_err(
                        input,
                        n,
                        "a LAMBADA passage needs a context before its last word",
                    )
                })?;
                let (context, word) = passage.split_at(cut);
                out.push(TaskItem::Cloze {
                    context: context.trim_end().to_string(),
                    target: format!(" {}", word.trim_start()),
                });
            }
        }
    }
    Ok(out)
}

/// Write items as a task file (one JSON object per line), atomically (temporary file, then rename).
pub fn write_task(items: &[TaskItem], out: &Path) -> Result<(), TaskError> {
    let mut body = String::new();
    for it in items {
        body.push_str(&serde_json::to_string(it).expect("task items serialize"));
        body.push('\n');
    }
    let tmp = out.with_extension(format!("jsonl.{}.tmp", std::process::id()));
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, out))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(out)(e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("isoflop-task-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            (
                "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 2}",
                "label 2 is out of range",
            ),
            (
                "{\"context\": \"a\", \"choices\": [], \"label\": 0}",
                "empty \"choices\"",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\" b\"], \"label\": -1}",
                "out of range",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\" b\", \"\"], \"label\": 0}",
                "choice 1 is empty",
            ),
            ("{\"context\": \"a\", \"target\": \"\"}", "empty \"target\""),
            ("{\"context\": \"a\"", "not a task item"),
            (
                "{\"choices\": [\"x\"], \"label\": 0}",
                "missing \"context\"",
            ),
            (
                "{\"context\": \"a\", \"target\": \" b\", \"choices\": [\"x\"]}",
                "both",
            ),
            (
                "{\"context\": \"a\", \"choices\": [\" b\"]}",
                "without \"label\"",
            ),
        ];
        for (i, (line, want)) in cases.iter().enumerate() {
            let body =
                format!("{{\"context\": \"ok\", \"choices\": [\" x\"], \"label\": 0}}\n\n{line}\n");
            let p = tmp(&format!("bad{i}.jsonl"), &body);
            let e = read_task(&p, None).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{}:3: ", p.display())) && e.contains(want),
                "case {i}: {e}"
            );
        }
        let p = tmp("mixed.jsonl", "{\"context\": \"a\", \"target\": \" b\"}\n{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}\n");
        let e = read_task(&p, None).unwrap_err().to_string();
        assert!(
            e.contains(":2: a multiple choice item in a cloze task"),
            "{e}"
        );
        let p = tmp("empty.jsonl", "\n");
        assert!(read_task(&p, None)
            .unwrap_err()
            .to_string()
            .contains("no task items"));
    }

    #[test]
    fn reads_items_with_limit_and_name() {
        let p = tmp(
            "mini-task.jsonl",
            "{\"context\": \"a\", \"target\": \" b\"}\n{\"context\": \"c\", \"target\": \" d\"}\n",
        );
        let t = read_task(&p, Some(1)).unwrap();
        assert_eq!(
            (t.name.as_str(), t.kind, t.items.len()),
            ("mini-task", TaskKind::Cloze, 1)
        );
    }

    #[test]
    fn hellaswag_converts() {
        // Two lines in the released hellaswag_val.jsonl format (fields trimmed to those read, plus extras).
        let body = r#"{"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY"}
{"ind": 92, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a grill [title] Heat it.", "ctx_b": "", "label": "0", "endings": ["[step] Scrub it.", "Eat it.", "Paint it.", "Sell it."]}
"#;
        let p = tmp("hs.jsonl", body);
        let items = convert(SourceFormat::Hellaswag, &p, None).unwrap();
        assert_eq!(
            items[0],
            TaskItem::MultipleChoice {
                context: "Roof shingle removal: A man is sitting on a roof. He".into(),
                choices: vec![
                    " is using wrap to wrap a pair of skis.".into(),
                    " is ripping level tiles off.".into(),
                    " is holding a rubik's cube.".into(),
                    " starts pulling up roofing on a roof.".into()
                ],
                label: 3
            }
        );
        match &items[1] {
            TaskItem::MultipleChoice {
                context,
                choices,
                label,
            } => {
                assert_eq!(context, "Home and Garden: How to clean a grill. Heat it.");
                assert_eq!(choices[0], " Scrub it.");
                assert_eq!(*label, 0);
            }
            other => panic!("{other:?}"),
        }
        let p = tmp(
            "hs-bad.jsonl",
            "{\"ctx_a\": \"a\", \"ctx_b\": \"b\", \"endings\": [\"x\", \"y\"], \"label\": 5}\n",
        );
        let e = convert(SourceFormat::Hellaswag, &p, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hs-bad.jsonl:1:") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn arc_converts() {
        let body = r#"{"id": "Mercury_SC_415702", "question": {"stem": "George wants to warm his hands quickly by rubbing them. Which skin surface will produce the most heat?", "choices": [{"text": "dry palms", "label": "A"}, {"text": "wet palms", "label": "B"}, {"text": "palms covered with oil", "label": "C"}, {"text": "palms covered with lotion", "label": "D"}]}, "answerKey": "A"}
{"id": "NYSEDREGENTS_2015_4_8", "question": {"stem": "Which is a gas?", "choices": [{"text": "ice", "label": "1"}, {"text": "steam", "label": "2"}, {"text": "water", "label": "3"}]}, "answerKey": "2"}
{"id": "x", "question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "E"}
"#;
        let p = tmp("arc.jsonl", body);
        let e = convert(SourceFormat::Arc, &p, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("arc.jsonl:3:") && e.contains("answerKey \"E\""),
            "{e}"
        );
        let good: String = body.lines().take(2).map(|l| format!("{l}\n")).collect();
        let p = tmp("arc2.jsonl", &good);
        let items = convert(SourceFormat::Arc, &p, None).unwrap();
        assert_eq!(
            items[1],
            TaskItem::MultipleChoice {
                context: "Question: Which is a gas?\nAnswer:".into(),
                choices: vec![" ice".into(), " steam".into(), " water".into()],
                label: 1
            }
        );
        match &items[0] {
            TaskItem::MultipleChoice { choices, label, .. } => {
                assert_eq!(
                    (choices.len(), *label, choices[0].as_str()),
                    (4, 0, " dry palms")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn piqa_converts_with_labels() {
        let body = r#"{"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar"}
{"goal": "To permanently attach metal legs to a chair, you can", "sol1": "Weld the metal together to get it to stay firmly in place", "sol2": "Nail the metal together to get it to stay firmly in place"}
"#;
        let p = tmp("piqa.jsonl", body);
        let l = tmp("piqa-labels.lst", "1\n0\n");
        let items = convert(SourceFormat::Piqa, &p, Some(&l)).unwrap();
        assert_eq!(
            items[0],
            TaskItem::MultipleChoice {
                context: "Question: When boiling butter, when it's ready, you can\nAnswer:".into(),
                choices: vec![" Pour it onto a plate".into(), " Pour it into a jar".into()],
                label: 1
            }
        );
        let short = tmp("piqa-short.lst", "1\n");
        let e = convert(SourceFormat::Piqa, &p, Some(&short))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 labels for 2 items"), "{e}");
        let bad = tmp("piqa-bad.lst", "1\n2\n");
        let e = convert(SourceFormat::Piqa, &p, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("piqa-bad.lst:2:") && e.contains("not 0 or 1"),
            "{e}"
        );
        assert!(convert(SourceFormat::Piqa, &p, None).is_err());
    }

    #[test]
    fn lambada_converts_text_and_jsonl() {
        let p = tmp("lambada.txt", "he looked at the old man and said goodbye to his friend george\n\nshe opened the door\n");
        let items = convert(SourceFormat::Lambada, &p, None).unwrap();
        assert_eq!(
            items,
            vec![
                TaskItem::Cloze {
                    context: "he looked at the old man and said goodbye to his friend".into(),
                    target: " george".into()
                },
                TaskItem::Cloze {
                    context: "she opened the".into(),
                    target: " door".into()
                }
            ]
        );
        let p = tmp(
            "lambada.jsonl",
            "{\"text\": \"in the beginning was the word\"}\n{\"text\": \"oneword\"}\n",
        );
        let e = convert(SourceFormat::Lambada, &p, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lambada.jsonl:2:"), "{e}");
    }
}
