//! Durable acknowledgements: with `state.durable_acknowledgements`, a report the collector
//! acknowledged survives a SIGKILL of the collector right after the acknowledgement.

use posmon_e2e_tests::Collector;

const CONFIG: &str = "[state]\ndurable_acknowledgements = true\n";

#[test]
fn an_acknowledged_report_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(dir.path(), CONFIG);
    let token = collector.token("T-DURABLE");
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/reports", collector.url);
    let mut acknowledged = 0;
    let day = posmon_e2e_tests::recent_day();
    for sequence in 1..=40u64 {
        let body = format!(
            r#"{{"reports":[{{"schema_version":1,"terminal_id":"T-DURABLE","sequence":{sequence},"observed_at":"{day}T02:00:{:02}Z","agent_version":"0.1.0","labels":{{"region":"cn-east"}}}}]}}"#,
            sequence % 60
        );
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let ack: serde_json::Value = response.json().unwrap();
        acknowledged = ack["acknowledged_sequence"].as_u64().unwrap();
    }
    assert_eq!(acknowledged, 40);
    // No orderly stop: whatever was acknowledged must already be on disk.
    collector.process.kill();
    let collector = Collector::start_at(dir.path(), CONFIG, "127.0.0.1:0");
    let detail = collector.get_json("/api/v1/terminals/T-DURABLE");
    assert_eq!(detail["sequence"], 40, "{detail}");
    assert_eq!(detail["labels"]["region"], "cn-east");
}
