//! Whether named processes (the POS application) run: a scan of `/proc/<pid>/comm`.

use posmon_protocol::ProcessStatus;

use crate::system::SystemRoot;

/// The kernel keeps at most this many characters of a process name in `comm`.
const COMM_MAX_CHARS: usize = 15;

pub fn processes(root: &SystemRoot, names: &[String]) -> Vec<ProcessStatus> {
    if names.is_empty() {
        return Vec::new();
    }
    let running: Vec<String> = root
        .list("proc")
        .into_iter()
        .filter(|entry| entry.bytes().all(|byte| byte.is_ascii_digit()))
        .filter_map(|pid| root.read_value(format!("proc/{pid}/comm")))
        .collect();
    names
        .iter()
        .map(|name| {
            let comm: String = name.chars().take(COMM_MAX_CHARS).collect();
            ProcessStatus {
                name: name.clone(),
                running: running.contains(&comm),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tests::FakeTree;

    #[test]
    fn processes_are_found_by_name_even_when_the_kernel_cut_it() {
        let tree = FakeTree::new(&[
            ("proc/1/comm", "init\n"),
            ("proc/412/comm", "posapp\n"),
            ("proc/977/comm", "payment-termina\n"),
            ("proc/self/comm", "posmon-agent\n"),
        ]);
        let names = ["posapp", "payment-terminal-ui", "printerd", "posmon-agent"].map(String::from);
        let running: Vec<bool> = processes(&tree.root(), &names)
            .into_iter()
            .map(|process| process.running)
            .collect();
        assert_eq!(running, [true, true, false, false]);
    }
}
