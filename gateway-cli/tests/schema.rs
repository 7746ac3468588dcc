//! `gw schema` prints the JSON Schema of the configuration language, and the committed copy
//! (`schema/gw.schema.json`, which the examples' editor modelines point at) is what it prints.
use gateway_core::config::schema::REGENERATE;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn gw_schema_prints_the_committed_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_gw"))
        .arg("schema")
        .current_dir(root())
        .output()
        .expect("run gw schema");
    assert!(out.status.success(), "gw schema failed: {out:?}");
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let schema: serde_json::Value = serde_json::from_str(&printed).expect("gw schema prints JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["title"], "gw configuration");
    let committed = std::fs::read_to_string(root().join("schema/gw.schema.json"))
        .unwrap_or_else(|e| panic!("schema/gw.schema.json: {e}; create it with `{REGENERATE}`"));
    assert!(
        committed == printed,
        "schema/gw.schema.json is stale (the config types changed): regenerate it with\n  {REGENERATE}\nand commit it"
    );
}
