//! Child processes of a benchmark, killed (and reaped) when dropped.

use std::process::Child;

pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
