//! Writes each target's seed inputs into `DIR/TARGET/`, the corpus `scripts/fuzz` starts
//! from: `write-seeds DIR`.

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: write-seeds DIR");
        std::process::exit(2);
    };
    for (target, name, bytes) in smartpark_fuzz::seeds() {
        let folder = std::path::Path::new(&dir).join(target);
        if let Err(e) = std::fs::create_dir_all(&folder)
            .and_then(|()| std::fs::write(folder.join(format!("seed-{name}")), &bytes))
        {
            eprintln!("cannot write a seed into {}: {e}", folder.display());
            std::process::exit(1);
        }
    }
}
