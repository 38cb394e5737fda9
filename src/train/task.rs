//! Downstream task evaluation: multiple-choice and cloze tasks (`crate::data::task`) scored with
//! [`Backend::forward_scores`], batched like training.
//!
//! **Tokenization.** A scored sequence is `BOS, ids(context), ids(continuation)`, the two texts encoded
//! separately with the run's tokenizer ([`task_encoder`]). The SentencePiece model adds a word-start `▁` to
//! the start of every encoded text (its dummy prefix) and drops leading whitespace, so a continuation
//! `" Paris"` (or `"Paris"`) is scored as the word-start piece `▁Paris`, exactly the pieces the word gets
//! inside running training text after a space or newline. A continuation is therefore always scored as
//! starting a new word; task files write it with its leading space, as benchmarks do. Training documents
//! start with BOS (2), so the scored sequence does too.
//!
//! **Truncation.** A sequence longer than `T + 1` tokens loses tokens from the left (the start of the
//! context, BOS first) and is counted in the result's `truncated`; when the continuation alone is longer
//! than `T`, only its last `T` tokens are scored.
//!
//! **Scores.** Multiple choice: `acc` picks the choice with the largest summed log-likelihood, `acc_norm`
//! the largest log-likelihood per UTF-8 byte of the choice text (lm-evaluation-harness's definitions; ties go
//! to the first choice); standard errors are the sample standard deviation of the 0/1 outcomes over √n;
//! `err = 1 − acc`. Cloze: `exact` is whether greedy decoding reproduces every target token, which under
//! teacher forcing is whether each target token is the argmax given the true prefix; `target_loglik` is
//! the mean over items of the target's summed log-likelihood; `err = 1 − exact`.

use crate::backend::{Backend, BackendError, TokenBatch};
use crate::data::task::{TaskFile, TaskItem, TaskKind};
use crate::data::text_tokenizer::{tokenizer_for_identity_hex, AnyTokenizer, TokenizerKind};
use crate::data::{DataError, Tokenizer};
use crate::model::config::{BOS_ID, PAD_ID};
use serde::{Deserialize, Serialize};

/// Encodes text into token ids as the run's training data was encoded (no BOS/EOS).
pub trait TextEncoder: Send + Sync {
    /// The ids of `text`.
    fn encode_text(&self, text: &str) -> Vec<u32>;
}

impl TextEncoder for Tokenizer {
    fn encode_text(&self, text: &str) -> Vec<u32> {
        self.encode(text)
    }
}

impl TextEncoder for AnyTokenizer {
    fn encode_text(&self, text: &str) -> Vec<u32> {
        self.encode(text)
    }
}

/// The tokenizer a run was trained with, from what the run records about it: the tokenizer identity of
/// its shards (run.json's `data.tokenizer_sha256`) when known, else the one tokenizer isoflop has for
/// the model's vocabulary size (32101: the bundled C4 SentencePiece model; 260: the byte tokenizer).
/// Every task text is encoded with it, so task scores use the ids the model was trained on.
pub fn task_encoder(
    vocab_size: usize,
    identity: Option<&str>,
) -> Result<Box<dyn TextEncoder>, DataError> {
    let tok = match identity {
        Some(id) => tokenizer_for_identity_hex(id)?,
        None => match [TokenizerKind::SentencePiece, TokenizerKind::Bytes]
            .into_iter()
            .find(|k| k.vocab_size() == vocab_size)
        {
            Some(k) => k.load()?,
            None => {
                return Err(DataError::Invalid(format!(
                    "the model's vocabulary has {vocab_size} ids, but isoflop's tokenizers have 32101 \
                     (the bundled SentencePiece model) and 260 (bytes); task text cannot be encoded \
                     as this model's training data was"
                )))
            }
        },
    };
    if tok.kind().vocab_size() != vocab_size {
        return Err(DataError::Invalid(format!(
            "the model's vocabulary has {vocab_size} ids, but its run's data were made with {} ({} ids)",
            tok.kind().name(),
            tok.kind().vocab_size()
        )));
    }
    Ok(Box::new(tok))
}

/// One row to score: the `T + 1` ids and which target positions belong to the continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredRow {
    /// `T + 1` ids, padded with 0 at the end.
    pub tokens_T1: Vec<u16>,
    /// Target positions (indices into `row[1..]`) of the continuation: `start..end`.
    pub span: (usize, usize),
    /// Whether the context lost tokens on the left to fit.
    pub truncated: bool,
}

/// Build the row for `context` + `continuation` (see the module documentation).
pub fn build_row(
    enc: &dyn TextEncoder,
    context: &str,
    continuation: &str,
    seq_len: usize,
) -> ScoredRow {
    let mut ids: Vec<u16> = vec![BOS_ID];
    ids.extend(enc.encode_text(context).into_iter().map(|x| x as u16));
    let ctx_len = ids.len();
    ids.extend(enc.encode_text(continuation).into_iter().map(|x| x as u16));
    let cont = ids.len() - ctx_len;
    let truncated = ids.len() > seq_len + 1;
    if truncated {
        ids.drain(..ids.len() - (seq_len + 1));
    }
    let len = ids.len();
    ids.resize(seq_len + 1, PAD_ID);
    // Token k (k ≥ 1) is target k − 1; the continuation is the last `cont` tokens (at most T of them).
    let end = len - 1;
    let start = end - cont.min(end);
    ScoredRow {
        tokens_T1: ids,
        span: (start, end),
        truncated,
    }
}

/// Score of one continuation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ContScore {
    /// Σ ln p over the continuation's tokens.
    pub loglik: f64,
    /// Whether every continuation token is the argmax.
    pub greedy: bool,
    /// Tokens scored.
    pub tokens: usize,
}

/// Figures of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task name (file name without `.jsonl`).
    pub name: String,
    /// The file.
    pub file: String,
    /// `multiple_choice` or `cloze`.
    pub kind: TaskKind,
    /// Items scored.
    pub items: usize,
    /// Scored sequences whose context was truncated on the left to fit T.
    pub truncated: usize,
    /// Top-1 error: 1 − acc (multiple choice) or 1 − exact (cloze).
    pub err: f64,
    /// Standard error of `err`.
    pub err_se: f64,
    /// Accuracy by summed log-likelihood (multiple choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc: Option<f64>,
    /// Its standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_se: Option<f64>,
    /// Accuracy by log-likelihood per byte of the choice (multiple choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm: Option<f64>,
    /// Its standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acc_norm_se: Option<f64>,
    /// Chance accuracy: mean of 1/(number of choices) (multiple choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    /// Fraction of targets greedy decoding reproduces exactly (cloze).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<f64>,
    /// Its standard error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_se: Option<f64>,
    /// Mean over items of the target's summed log-likelihood (cloze).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_loglik: Option<f64>,
}

/// Results of several tasks with their average.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// One per task, in the order given.
    pub tasks: Vec<TaskResult>,
    /// Mean of the tasks' `err` (the sweep's `err_avg`).
    pub err_avg: f64,
    /// Mean of the tasks' accuracy (`1 − err`).
    pub acc_avg: f64,
}

/// Mean and standard error (sample standard deviation / √n) of 0/1 outcomes.
fn mean_se(hits: &[bool]) -> (f64, f64) {
    let n = hits.len() as f64;
    let m = hits.iter().filter(|&&h| h).count() as f64 / n;
    let se = if hits.len() > 1 {
        (m * (1.0 - m) * n / (n - 1.0)).sqrt() / n.sqrt()
    } else {
        f64::NAN
    };
    (m, se)
}

/// First index of the maximum.
fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// Score every continuation of `rows` in micro-batches of `micro_batch` rows; `tick` is called after each
/// micro-batch with the number of rows done.
pub fn score_rows(
    backend: &mut dyn Backend,
    rows: &[ScoredRow],
    micro_batch: usize,
    mut tick: impl FnMut(usize),
) -> Result<Vec<ContScore>, BackendError> {
    let cfg = *backend.config();
    let t = cfg.seq_len;
    let mb = micro_batch.max(1);
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(mb) {
        let toks: Vec<u16> = chunk
            .iter()
            .flat_map(|r| r.tokens_T1.iter().copied())
            .collect();
        let s = backend.forward_scores(&TokenBatch::new(&cfg, &toks, chunk.len())?)?;
        for (i, r) in chunk.iter().enumerate() {
            let (a, b) = r.span;
            let lp = &s.logp_BxT[i * t + a..i * t + b];
            let hit = &s.hit_BxT[i * t + a..i * t + b];
            out.push(ContScore {
                loglik: lp.iter().map(|&x| x as f64).sum(),
                greedy: hit.iter().all(|&h| h),
                tokens: b - a,
            });
        }
        tick(chunk.len());
    }
    Ok(out)
}

/// The rows of a task, in item order (each choice of a multiple-choice item is one row).
pub fn task_rows(task: &TaskFile, enc: &dyn TextEncoder, seq_len: usize) -> Vec<ScoredRow> {
    let mut rows = Vec::new();
    for it in &task.items {
        match it {
            TaskItem::MultipleChoice {
                context, choices, ..
            } => {
                for c in choices {
                    rows.push(build_row(enc, context, c, seq_len));
                }
            }
            TaskItem::Cloze { context, target } => {
                rows.push(build_row(enc, context, target, seq_len))
            }
        }
    }
    rows
}

/// Figures of a task from the scores of its rows (as [`task_rows`] orders them).
pub fn summarize(task: &TaskFile, rows: &[ScoredRow], scores: &[ContScore]) -> TaskResult {
    let truncated = rows.iter().filter(|r| r.truncated).count();
    let mut res = TaskResult {
        name: task.name.clone(),
        file: task.path.display().to_string(),
        kind: task.kind,
        items: task.items.len(),
        truncated,
        err: f64::NAN,
        err_se: f64::NAN,
        acc: None,
        acc_se: None,
        acc_norm: None,
        acc_norm_se: None,
        chance: None,
        exact: None,
        exact_se: None,
        target_loglik: None,
    };
    let mut at = 0;
    match task.kind {
        TaskKind::MultipleChoice => {
            let (mut acc, mut norm, mut chance) = (Vec::new(), Vec::new(), 0.0);
            for it in &task.items {
                if let TaskItem::MultipleChoice { choices, label, .. } = it {
                    let s = &scores[at..at + choices.len()];
                    at += choices.len();
                    acc.push(argmax(s.iter().map(|c| c.loglik)) == *label);
                    norm.push(
                        argmax(
                            s.iter()
                                .zip(choices)
                                .map(|(c, text)| c.loglik / text.len().max(1) as f64),
                        ) == *label,
                    );
                    chance += 1.0 / choices.len() as f64;
                }
            }
            let (a, ase) = mean_se(&acc);
            let (an, anse) = mean_se(&norm);
            res.acc = Some(a);
            res.acc_se = Some(ase);
            res.acc_norm = Some(an);
            res.acc_norm_se = Some(anse);
            res.chance = Some(chance / task.items.len() as f64);
            res.err = 1.0 - a;
            res.err_se = ase;
        }
        TaskKind::Cloze => {
            let exact: Vec<bool> = scores.iter().map(|s| s.greedy).collect();
            let (e, se) = mean_se(&exact);
            res.exact = Some(e);
            res.exact_se = Some(se);
            res.target_loglik =
                Some(scores.iter().map(|s| s.loglik).sum::<f64>() / scores.len() as f64);
            res.err = 1.0 - e;
            res.err_se = se;
        }
    }
    res
}

/// Evaluate `backend` on `tasks`; `tick(rows_done)` drives a progress bar (total rows: the sum of
/// [`task_rows`] lengths, see [`count_rows`]).
pub fn evaluate_tasks(
    backend: &mut dyn Backend,
    tasks: &[TaskFile],
    enc: &dyn TextEncoder,
    micro_batch: usize,
    mut tick: impl FnMut(usize),
) -> Result<TaskReport, BackendError> {
    let t = backend.config().seq_len;
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let rows = task_rows(task, enc, t);
        let scores = score_rows(backend, &rows, micro_batch, &mut tick)?;
        out.push(summarize(task, &rows, &scores));
    }
    let n = out.len().max(1) as f64;
    let err_avg = out.iter().map(|r| r.err).sum::<f64>() / n;
    Ok(TaskReport {
        tasks: out,
        err_avg,
        acc_avg: 1.0 - err_avg,
    })
}

/// Number of scored rows of `tasks` (one per choice or cloze item), for a progress bar.
pub fn count_rows(tasks: &[TaskFile]) -> usize {
    tasks
        .iter()
        .flat_map(|t| &t.items)
        .map(|it| match it {
            TaskItem::MultipleChoice { choices, .. } => choices.len(),
            TaskItem::Cloze { .. } => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One id per character (a = 10, b = 11, ...), to check the row layout.
    struct Chars;
    impl TextEncoder for Chars {
        fn encode_text(&self, text: &str) -> Vec<u32> {
            text.bytes()
                .filter(|b| *b != b' ')
                .map(|b| (b - b'a') as u32 + 10)
                .collect()
        }
    }

    #[test]
    fn rows_put_the_continuation_last_and_truncate_on_the_left() {
        let r = build_row(&Chars, "abc", " de", 8);
        assert_eq!(r.tokens_T1, vec![2, 10, 11, 12, 13, 14, 0, 0, 0]);
        // Targets are row[1..]: d (13) is target 3, e target 4.
        assert_eq!((r.span, r.truncated), ((3, 5), false));
        let r = build_row(&Chars, "abcdefgh", " ij", 5);
        assert_eq!(r.tokens_T1, vec![14, 15, 16, 17, 18, 19]);
        assert_eq!((r.span, r.truncated), ((3, 5), true));
        // A continuation longer than T: its last T tokens are scored.
        let r = build_row(&Chars, "a", " bcdefgh", 4);
        assert_eq!((r.span, r.truncated), ((0, 4), true));
    }

    #[test]
    fn sentencepiece_scores_the_continuation_as_a_new_word() {
        let tok = Tokenizer::bundled().unwrap();
        for (ctx, cont) in [
            ("In the beginning God created the heaven and the", " earth"),
            ("And God said, Let there be", " light: and there was light."),
            ("The capital of France is", " Paris"),
        ] {
            // Separately encoded pieces equal the pieces of the joined text: no merge across the boundary.
            let mut sep = tok.encode(ctx);
            sep.extend(tok.encode(cont));
            assert_eq!(
                sep,
                tok.encode(&format!("{ctx}{cont}")),
                "{ctx:?} + {cont:?}"
            );
            // The continuation starts with a word-start piece, with or without its leading space.
            let first = tok.encode(cont)[0];
            assert!(
                tok.piece(first).unwrap().starts_with('\u{2581}'),
                "{cont:?}"
            );
            assert_eq!(tok.encode(cont), tok.encode(cont.trim_start()));
        }
    }

    #[test]
    fn summaries_pick_by_sum_and_per_byte() {
        let task = TaskFile {
            name: "t".into(),
            path: "t.jsonl".into(),
            kind: TaskKind::MultipleChoice,
            items: vec![
                TaskItem::MultipleChoice {
                    context: "c".into(),
                    choices: vec![" a".into(), " bbbbbbb".into()],
                    label: 1,
                },
                TaskItem::MultipleChoice {
                    context: "c".into(),
                    choices: vec![" a".into(), " b".into(), " c".into()],
                    label: 0,
                },
            ],
        };
        let rows = task_rows(&task, &Chars, 16);
        let s = |loglik| ContScore {
            loglik,
            greedy: false,
            tokens: 1,
        };
        // Item 1: the sum picks " a" (−2 > −7.2), per byte " bbbbbbb" (−7.2/8 = −0.9 > −2/2); item 2:
        // both pick choice 0 (a tie of choices 1 and 2 below it).
        let scores = [s(-2.0), s(-7.2), s(-1.0), s(-3.0), s(-3.0)];
        let r = summarize(&task, &rows, &scores);
        assert_eq!(r.acc, Some(0.5));
        assert_eq!(r.acc_norm, Some(1.0));
        assert_eq!(r.err, 0.5);
        assert!((r.acc_se.unwrap() - 0.5).abs() < 1e-12);
        assert!((r.chance.unwrap() - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    }
}
