pub async fn run() -> i32 {
    eprintln!("sansh --demo: not built yet");
    2
}
