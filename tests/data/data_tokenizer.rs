//! Parity of the pure-Rust SentencePiece tokenizer with pip's `sentencepiece` (see
//! tests/fixtures/tokenizer_parity.py), and decoding.

use isoflop::data::Tokenizer;

#[test]
fn ids_match_python_sentencepiece() {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer_parity.json"
    ))
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let tok = Tokenizer::bundled().unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 200);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text);
        if got != want {
            failures.push(format!(
                "case {i} {:?}\n  normalized {:?}\n  want {:?}\n  got  {:?}",
                text.chars().take(80).collect::<String>(),
                tok.normalize(text).chars().take(80).collect::<String>(),
                &want[..want.len().min(40)],
                &got[..got.len().min(40)]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn model_facts_and_decode() {
    let tok = Tokenizer::bundled().unwrap();
    assert_eq!(tok.vocab_size(), 32101);
    assert_eq!(tok.unk_id(), 3);
    assert_eq!(tok.piece_to_id("\u{2581}Hello"), Some(8775));
    let ids = tok.encode("Hello world, how are you?");
    assert_eq!(tok.decode(&ids), "Hello world, how are you?");
    let mut doc = Vec::new();
    tok.encode_document_u16("Hello", 2, 1, &mut doc);
    assert_eq!(doc, vec![2, 8775, 1]);
    // Unknown characters decode to sentencepiece's " ⁇ " surface.
    assert_eq!(tok.decode(&tok.encode("a {b}")), "a  \u{2047} b \u{2047} ");
}
