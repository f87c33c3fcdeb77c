use super::*;

#[test]
fn scratch() {
    for t in [
        "[gateway]\ndata_dir = \"x\"\n\n[[identity]]\nname = \"a\"\nkind = \"service\"\n",
        "[gateway]\ndata_dir = \"x\"\nbogus = 1\n",
        "[gateway]\ndata_dir = \"x\"\n[[identity]]\nname = \"a\"\nrolez = []\n",
        "[gateway]\ndata_dir = \"x\"\nmax_connections = \"a\"\n",
        "[gateway]\ndata_dir = \"x\"\nmax_message_size = true\n",
        "[gateway]\ndata_dir = \"x\"\n[[identity]]\nname = \"a\"\nroles = [\"a\" \n",
        "[gateway]\ndata_dir = \"x\"\n[[target]]\nname = \"a\"\ntls = { cert = \"x\" }\n",
        "[gateway]\ndata_dir = \"x\"\n[[rule]]\nname = \"a\"\n",
        "[[rule]]\nname = \"a\"\n",
    ] {
        match parse(t, Path::new("/tmp/p.toml")) {
            Ok(_) => println!("OK"),
            Err(e) => println!("{e}\n---"),
        }
    }
}
