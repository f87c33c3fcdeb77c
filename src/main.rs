fn main() {
    eprintln!("portcullis: not yet");
}
