//! What the fuzz targets share: running an input on a worker thread with a
//! 1 MiB stack. The library's runtime thread has 2 MiB and
//! AddressSanitizer's frames are larger, so deep recursion shows; one
//! long-lived thread, since spawning one per input costs more than most
//! inputs. A panic anywhere aborts the process (libfuzzer-sys's hook), which
//! libFuzzer reports as a crash.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

type Job = (Vec<u8>, fn(&[u8]));

struct Worker {
    jobs: SyncSender<Job>,
    done: Mutex<Receiver<()>>,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

/// Runs `f(data)` on the worker thread and waits for it.
pub fn on_small_stack(data: &[u8], f: fn(&[u8])) {
    let worker = WORKER.get_or_init(|| {
        let (jobs, inbox) = sync_channel::<Job>(0);
        let (finished, done) = sync_channel(0);
        std::thread::Builder::new()
            .name("fuzz-worker".into())
            .stack_size(1 << 20)
            .spawn(move || {
                for (data, f) in inbox {
                    f(&data);
                    let _ = finished.send(());
                }
            })
            .expect("spawn the fuzz worker");
        Worker {
            jobs,
            done: Mutex::new(done),
        }
    });
    let done = worker.done.lock().expect("fuzz worker lock");
    worker
        .jobs
        .send((data.to_vec(), f))
        .expect("fuzz worker alive");
    done.recv().expect("fuzz worker finished the input");
}
