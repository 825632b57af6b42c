//! The root under which the agent reads the host's `/sys`, `/proc`, `/etc` and `/dev`, so that
//! tests (and containers) can point it at a fake tree. Reads are bounded in size; this module
//! never writes.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes read from one file under the root: `/proc` and `/sys` files are small, and a
/// larger one is cut rather than read whole.
const FILE_MAX_BYTES: u64 = 1024 * 1024;

/// `/` on a real host, a temporary directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRoot(PathBuf);

impl SystemRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SystemRoot(root.into())
    }

    /// Whether this is the host's own root (`/`) rather than a tree standing in for it (in
    /// tests): only then is the network it describes real, and may be sent a packet.
    pub fn is_host(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// `relative` (e.g. `proc/net/route`) under the root.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        let relative = relative.as_ref();
        self.0.join(relative.strip_prefix("/").unwrap_or(relative))
    }

    /// The file's text, at most 1 MiB of it.
    pub fn read(&self, relative: impl AsRef<Path>) -> std::io::Result<String> {
        let mut text = String::new();
        std::fs::File::open(self.path(relative))?
            .take(FILE_MAX_BYTES)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// The file's first line, trimmed; `None` when it cannot be read.
    pub fn read_value(&self, relative: impl AsRef<Path>) -> Option<String> {
        self.read(relative)
            .ok()
            .map(|text| text.lines().next().unwrap_or_default().trim().to_string())
    }

    /// The names of the entries of a directory, sorted; empty when it cannot be read.
    pub fn list(&self, relative: impl AsRef<Path>) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(relative))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::SystemRoot;

    /// A healthy network under a fake root: eth0 up, a default route via 192.168.1.1 and its
    /// neighbour entry.
    pub const HEALTHY_NETWORK: [(&str, &str); 4] = [
        ("sys/class/net/eth0/carrier", "1\n"),
        ("sys/class/net/eth0/operstate", "up\n"),
        (
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
        ),
        (
            "proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth0\n",
        ),
    ];

    /// A temporary directory holding the given files, as a fake `/sys` and `/proc` tree.
    pub struct FakeTree {
        dir: tempfile::TempDir,
    }

    impl FakeTree {
        pub fn new(files: &[(&str, &str)]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for (path, content) in files {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            FakeTree { dir }
        }

        pub fn root(&self) -> SystemRoot {
            SystemRoot::new(self.dir.path())
        }
    }
}
