//! The bundled sample: tokenized on first use into the cache, then reused; both splits load.

use isoflop::data::shard::{list_shards, Shard};
use isoflop::data::{bundled_sample_shards, ShardLoader, Split, TokenSource, Tokenizer};

#[test]
fn bundled_sample_tokenizes_once_and_loads() {
    let cache = tempfile::tempdir().unwrap();
    // No other test of this binary reads the cache, so setting the variable races with nothing.
    std::env::set_var("ISOFLOP_CACHE", cache.path());
    let dir = bundled_sample_shards().unwrap();
    assert!(dir.starts_with(cache.path()));
    let shards = list_shards(&dir).unwrap();
    assert_eq!(shards.len(), 2);
    let mtime = std::fs::metadata(&shards[0]).unwrap().modified().unwrap();
    assert_eq!(bundled_sample_shards().unwrap(), dir);
    assert_eq!(
        std::fs::metadata(&shards[0]).unwrap().modified().unwrap(),
        mtime,
        "re-tokenized"
    );
    let tok = Tokenizer::bundled().unwrap();
    let train = Shard::open(&shards[0]).unwrap();
    train.verify().unwrap();
    assert_eq!(train.header.doc_count, 1142);
    let first: Vec<u32> = train
        .document(0)
        .unwrap()
        .iter()
        .map(|&t| t as u32)
        .collect();
    assert!(tok
        .decode(&first)
        .starts_with("In the beginning God created the heaven and the earth."));
    let mut tr = ShardLoader::open(&dir, 512, 0, Split::Train, 32101).unwrap();
    let ev = ShardLoader::open(&dir, 512, 0, Split::Eval, 32101).unwrap();
    assert!(
        tr.num_windows() > 2000 && ev.num_windows() > 80,
        "{} {}",
        tr.num_windows(),
        ev.num_windows()
    );
    let b = tr.next_batch(4).unwrap();
    assert_eq!(b.len(), 4 * 513);
    assert!(b.iter().all(|&t| t < 32101));
}
