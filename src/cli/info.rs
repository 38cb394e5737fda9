//! `isoflop info`: parameter counts, FLOPs per token and token budgets of a model.

use super::train::ModelArgs;
use isoflop::model::accounting::{token_budget, CHINCHILLA_TOKENS_PER_PARAM};
use isoflop::model::{FlopConvention, FlopsPerToken, ParamCounts};

/// Arguments of `isoflop info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token multiplier (tokens per parameter) to budget for, besides Chinchilla's 20.
    #[arg(long, value_name = "M")]
    token_multiplier: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn human(x: f64) -> String {
    let (v, s) = match x.abs() {
        a if a >= 1e18 => (x / 1e18, "E"),
        a if a >= 1e15 => (x / 1e15, "P"),
        a if a >= 1e12 => (x / 1e12, "T"),
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    format!("{v:.3}{s}")
}

/// Run `isoflop info`.
pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let cfg = args.model.resolve(None)?;
    cfg.validate()?;
    let p = ParamCounts::of(&cfg);
    let f = FlopsPerToken::of(&cfg);
    let chin = token_budget(&cfg, CHINCHILLA_TOKENS_PER_PARAM);
    if args.json {
        let mut v = serde_json::json!({
            "model": cfg, "n_heads": cfg.n_heads(), "d_ff": cfg.d_ff(),
            "params": p, "flops_per_token": f,
            "chinchilla_tokens": chin,
            "chinchilla_flops": FlopConvention::ALL.iter().map(|c| (c.name(), f.get(*c) * chin)).collect::<std::collections::BTreeMap<_, _>>(),
        });
        if let Some(m) = args.token_multiplier {
            v["multiplier_tokens"] = serde_json::json!(token_budget(&cfg, m));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "model: D={} L={} H={} F={} T={} V={}",
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads(),
        cfg.d_ff(),
        cfg.seq_len,
        cfg.vocab_size
    );
    println!("\nparameters");
    for (k, v) in [
        ("total", p.total),
        ("embedding (embed)", p.embedding),
        ("head", p.head),
        ("non-embedding (blocks + final norm)", p.non_embedding),
        ("N = non-embedding + head", p.n),
        ("approx 12·D²·L + D·V", p.approx),
    ] {
        println!("  {k:<38} {v:>16}  ({})", human(v as f64));
    }
    println!("\ntraining FLOPs per token");
    for c in FlopConvention::ALL {
        println!(
            "  {:<38} {:>16.0}  ({})",
            c.name(),
            f.get(c),
            human(f.get(c))
        );
    }
    let mut budgets = vec![(CHINCHILLA_TOKENS_PER_PARAM, chin)];
    if let Some(m) = args.token_multiplier {
        budgets.push((m, token_budget(&cfg, m)));
    }
    for (m, tokens) in budgets {
        println!(
            "\nbudget at {m} tokens per parameter: {} tokens",
            human(tokens)
        );
        for c in FlopConvention::ALL {
            println!("  {:<38} {:>16.4e} FLOPs", c.name(), f.get(c) * tokens);
        }
    }
    Ok(())
}
