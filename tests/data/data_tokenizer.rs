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

#[test]
fn byte_tokenizer_maps_byte_b_to_id_b_plus_4_and_round_trips() {
    use isoflop::data::bytes::{ByteTokenizer, BYTE_VOCAB};
    let t = ByteTokenizer;
    assert_eq!((t.vocab_size(), BYTE_VOCAB, t.unk_id()), (260, 260, 3));
    let text = "Az \u{e9}\n\u{1f600}";
    let ids = t.encode(text);
    assert_eq!(ids.len(), text.len());
    assert_eq!((ids[0], ids[2]), (u32::from(b'A') + 4, 32 + 4));
    assert!(ids.iter().all(|&i| (4..260).contains(&i)));
    assert_eq!(t.decode(&ids), text);
    let mut doc = Vec::new();
    t.encode_document_u16("\u{0}\u{ff}", 2, 1, &mut doc);
    // NUL is byte 0 -> id 4; U+00FF is the bytes c3 bf -> 0xc3 + 4, 0xbf + 4.
    assert_eq!(doc, vec![2, 4, 0xc3 + 4, 0xbf + 4, 1]);
    // Special ids vanish when decoding; ids past the vocabulary read U+FFFD.
    assert_eq!(t.decode(&[2, 4 + u32::from(b'h'), 1, 0]), "h");
    assert_eq!(t.decode(&[260]), "\u{FFFD}");
}

#[test]
fn tokenizer_identities_give_back_their_tokenizer() {
    use isoflop::data::tokenizer::hex;
    use isoflop::data::TokenizerKind;
    use isoflop::data::{tokenizer_for_identity, tokenizer_for_identity_hex, DocumentEncoder};
    for k in [TokenizerKind::SentencePiece, TokenizerKind::Bytes] {
        let t = tokenizer_for_identity(&k.sha256()).unwrap();
        assert_eq!(t.kind(), k);
        assert_eq!(t.vocab_size(), k.vocab_size());
        assert_eq!(t.sha256(), k.sha256());
        assert_eq!(
            tokenizer_for_identity_hex(&hex(&k.sha256()))
                .unwrap()
                .kind(),
            k
        );
    }
    // The SentencePiece identity is the model file's sha256, as shards always recorded it.
    assert_eq!(
        TokenizerKind::SentencePiece.sha256(),
        Tokenizer::bundled().unwrap().sha256()
    );
    assert_ne!(
        TokenizerKind::Bytes.sha256(),
        TokenizerKind::SentencePiece.sha256()
    );
    let e = tokenizer_for_identity(&[7; 32]).err().unwrap().to_string();
    assert!(e.contains("0707") && e.contains("byte"), "{e}");
    assert!(tokenizer_for_identity_hex("zz").is_err());
    let b = TokenizerKind::Bytes.load().unwrap();
    assert_eq!(
        b.encode("hi"),
        vec![u32::from(b'h') + 4, u32::from(b'i') + 4]
    );
    assert_eq!(b.decode(&b.encode("hi")), "hi");
    let sp = TokenizerKind::SentencePiece.load().unwrap();
    assert_eq!(sp.decode(&sp.encode("Hello world")), "Hello world");
}
