//! docs/REPORT.md shows the schema the code validates with.

#[test]
fn docs_report_md_holds_the_bundled_schema() {
    let doc = include_str!("../../../docs/REPORT.md");
    let block = doc
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```json block in docs/REPORT.md");
    assert_eq!(block, pot_orchestrator::schema::REPORT_SCHEMA);
}
