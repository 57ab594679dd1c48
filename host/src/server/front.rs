//! The front door: the one path every image request takes once a door (the HTTP API or the
//! axon) has read and checked it. A decoding turn within the hotkey's budget, the decode
//! (shared by requests with the same bytes), the hotkey's policy, then the request metrics and
//! the status page's list of recent answers. The doors differ only in how they read a request
//! and how they write the answer or the refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_common::image::{DecodeError, IngressLimits};

use super::ingress::Refusal;
use super::state::{Server, Serving};
use crate::answer::Answer;
use crate::policy::Hotkey;

/// Images up to this many pixels (a 320×320 JPEG decodes in well under a millisecond here)
/// are decoded on the request's worker thread; larger ones after handing its other tasks over.
const INLINE_DECODE_PIXELS: u64 = 320 * 320;

/// One image request, as a door hands it over.
pub(crate) struct Job {
    pub serving: Arc<Serving>,
    pub hotkey: Arc<Hotkey>,
    /// The encoded image.
    pub bytes: Vec<u8>,
    pub limits: IngressLimits,
    /// The client's rollout key; without one the image's content keys the arm.
    pub sticky: Option<u64>,
    /// When the request arrived: the hotkey's budget counts from here.
    pub arrived: Instant,
    /// `http` or `axon`, for the prediction log.
    pub via: &'static str,
    /// The validator's hotkey (axon requests), for the prediction log.
    pub caller: Option<String>,
    /// How this door refuses an image that does not decode.
    pub refuse_image: fn(DecodeError) -> Refusal,
}

/// How long a request took: in all since it arrived, and getting its decoded image (a decode,
/// a wait for another request's decode of the same bytes, or a lookup of one already made).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Took {
    pub total: Duration,
    pub decode: Duration,
}

/// Decodes, serves and counts: the answer (which may be a failed one: `Source::None`) and
/// how long it took.
pub(crate) async fn answer(server: &Server, job: Job) -> Result<(Answer, Took), Refusal> {
    let Job { serving, hotkey: hk, bytes, limits, sticky, arrived, via, caller, refuse_image } = job;
    // the header is read once: for the decode budget here, for the decode below
    let head = cascade_common::image::header(&bytes);
    let dims = head.as_ref().ok().map(|h| (h.width, h.height));
    // a big JPEG is decoded at the size the models need: its memory is reserved at that size
    let min_side = server.min_side(&serving.models);
    let scale = head.as_ref().map_or(1, |h| cascade_common::image::planned_scale(*h, min_side));
    let turn = server.decode_turn(arrived, hk.budget, dims, scale).await?;
    // A validator-sized image is decoded on this task's thread (a fraction of a millisecond);
    // a larger one hands the thread's other tasks over first. The policy is awaited here: it
    // yields this thread while it waits for models (runtime/pool.rs), so an answer costs no
    // thread hand-off of its own, and a short model with an idle worker runs right here.
    let origin = crate::wit::image::bytes_key(&bytes);
    let sticky = sticky.unwrap_or_else(|| crate::rollout::image_sticky_key(&origin));
    let t = Instant::now();
    // a refused scaled decode done in full takes the rest of its memory first, or is refused
    let mut full_memory = None;
    let decoded = {
        let mut before_full = |_: &str| {
            full_memory = turn.for_full_decode()?;
            Ok(())
        };
        let mut run = || super::decoded::decode(origin, &bytes, &head, &limits, min_side, &mut before_full);
        match dims {
            Some((w, h)) if u64::from(w) * u64::from(h) > INLINE_DECODE_PIXELS => tokio::task::block_in_place(run),
            _ => run(),
        }
    };
    let img = decoded.map_err(refuse_image)?;
    let decode = t.elapsed();
    // a large image's memory stays reserved until its answer (the policy holds the image)
    let (slot, memory) = turn.split();
    drop(slot);
    let prov = crate::predlog::Provenance {
        via,
        caller,
        bytes: if hk.log.is_some() { Bytes::from(bytes) } else { Bytes::new() },
    };
    // finished, logged and counted even if the client hangs up mid-answer (unabandoned.rs);
    // only the status page's list of recent answers misses such a request
    let (policy, models) = (hk.clone(), serving.models.clone());
    let answer = super::unabandoned::unabandoned(async move {
        let answer = policy.serve(&models, img, sticky, arrived, origin, prov).await;
        crate::metrics::global().request(&policy.name, &answer.stage, answer.source.outcome(), arrived.elapsed());
        answer
    })
    .await;
    drop((memory, full_memory));
    let took = arrived.elapsed();
    server.note_answer(&hk.name, &answer, took);
    Ok((answer, Took { total: took, decode }))
}
