//! The host side of the contract's imports: the image resource, the primitives and the roles.

use std::sync::Arc;

use image::imageops;
use wasmtime::component::Resource;
use wasmtime::error::Context;
use wasmtime::format_err;

use super::calls;
use super::request::RequestCtx;
use super::store::StoreState;
use crate::wit::cascade::policy::{primitives, roles, types};
use crate::wit::image::ImageRef;
use crate::wit::{Answer, Bbox, Call, Classification, Detection, Error, NamedScore, Outcome, TextLine};
use cascade_engines::Output;

type Host<T> = wasmtime::Result<T>;

impl StoreState {
    /// The request the running call serves; its absence is a host bug (the guest traps).
    fn ctx(&self) -> Host<&Arc<RequestCtx>> {
        self.ctx.as_ref().ok_or_else(|| format_err!("primitive called outside a request"))
    }

    fn image(&self, r: &Resource<ImageRef>) -> Host<&ImageRef> {
        self.table.get(r).context("image handle")
    }

    fn push_image(&mut self, pixels: image::RgbImage, key: [u8; 16]) -> Host<Resource<ImageRef>> {
        let img = self.ctx()?.derived(Arc::new(pixels), key);
        let r = self.table.push(img)?;
        self.created.push(r.rep());
        Ok(r)
    }

    /// Runs a model call: the request and the image are cloned out first (cheap: `Arc`s), so
    /// the wait borrows nothing of the store.
    async fn call(&mut self, img: &Resource<ImageRef>, call: Call) -> Host<Result<Output, Error>> {
        let (ctx, image) = (self.ctx()?.clone(), self.image(img)?.clone());
        Ok(calls::run(&ctx, &image, &call).await)
    }
}

/// Unwraps the outcome a primitive asked for; another variant is a host bug.
macro_rules! expect {
    ($r:expr, $v:ident) => {
        match $r.map(calls::to_outcome) {
            Ok(Outcome::$v(x)) => Ok(Ok(x)),
            Ok(_) => Err(format_err!(concat!("engine answered a ", stringify!($v), " call with another outcome"))),
            Err(e) => Ok(Err(e)),
        }
    };
}

impl types::HostImage for StoreState {
    fn width(&mut self, img: Resource<ImageRef>) -> Host<u32> {
        Ok(self.image(&img)?.pixels.width())
    }

    fn height(&mut self, img: Resource<ImageRef>) -> Host<u32> {
        Ok(self.image(&img)?.pixels.height())
    }

    fn crop(&mut self, img: Resource<ImageRef>, region: Bbox) -> Host<Result<Resource<ImageRef>, Error>> {
        let src = self.image(&img)?.pixels.clone();
        let (w, h) = (src.width() as f32, src.height() as f32);
        let bad = [region.x0, region.y0, region.x1, region.y1].iter().any(|v| !v.is_finite());
        let (x0, y0) = (region.x0.clamp(0.0, w).floor(), region.y0.clamp(0.0, h).floor());
        let (x1, y1) = (region.x1.clamp(0.0, w).ceil(), region.y1.clamp(0.0, h).ceil());
        if bad || x1 - x0 < 1.0 || y1 - y0 < 1.0 {
            return Ok(Err(Error::InvalidArgument(format!("empty crop {region:?} of a {w}×{h} image"))));
        }
        let (cw, ch) = ((x1 - x0) as u32, (y1 - y0) as u32);
        if !self.ctx()?.derive(cw as u64 * ch as u64) {
            return Ok(Err(Error::InvalidArgument(
                "the request derived too many images (crops and flips are bounded per request)".into(),
            )));
        }
        let view = imageops::crop_imm(&*src, x0 as u32, y0 as u32, cw, ch);
        let op: Vec<u8> = [
            b"crop".as_slice(),
            &(x0 as u32).to_le_bytes(),
            &(y0 as u32).to_le_bytes(),
            &cw.to_le_bytes(),
            &ch.to_le_bytes(),
        ]
        .concat();
        let key = self.image(&img)?.derived_key(&op);
        Ok(Ok(self.push_image(view.to_image(), key)?))
    }

    fn flip_horizontal(&mut self, img: Resource<ImageRef>) -> Host<Resource<ImageRef>> {
        let src = self.image(&img)?.pixels.clone();
        // `flip-horizontal` has no error to answer with: past the allowance the call traps
        if !self.ctx()?.derive(src.width() as u64 * src.height() as u64) {
            return Err(format_err!("the request derived too many images (crops and flips are bounded per request)"));
        }
        let key = self.image(&img)?.derived_key(b"flip-horizontal");
        self.push_image(imageops::flip_horizontal(&*src), key)
    }

    fn drop(&mut self, img: Resource<ImageRef>) -> Host<()> {
        let rep = img.rep();
        self.created.retain(|r| *r != rep);
        self.table.delete(img)?;
        Ok(())
    }
}

impl types::Host for StoreState {}

impl primitives::Host for StoreState {
    async fn classify(&mut self, model: String, img: Resource<ImageRef>) -> Host<Result<Classification, Error>> {
        expect!(self.call(&img, Call::Classify(model)).await?, Classify)
    }

    async fn detect(
        &mut self,
        model: String,
        img: Resource<ImageRef>,
        min_confidence: f32,
    ) -> Host<Result<Vec<Detection>, Error>> {
        expect!(self.call(&img, Call::Detect((model, min_confidence))).await?, Detect)
    }

    async fn read_text(&mut self, model: String, img: Resource<ImageRef>) -> Host<Result<Vec<TextLine>, Error>> {
        expect!(self.call(&img, Call::ReadText(model)).await?, ReadText)
    }

    async fn embed(&mut self, model: String, img: Resource<ImageRef>) -> Host<Result<Vec<f32>, Error>> {
        expect!(self.call(&img, Call::Embed(model)).await?, Embed)
    }

    async fn ask(&mut self, model: String, img: Resource<ImageRef>, prompt: String) -> Host<Result<String, Error>> {
        expect!(self.call(&img, Call::Ask((model, prompt))).await?, Ask)
    }

    async fn ask_score(
        &mut self,
        model: String,
        img: Resource<ImageRef>,
        prompt: String,
    ) -> Host<Result<Answer, Error>> {
        match self.call(&img, Call::Ask((model, prompt))).await? {
            Ok(Output::Answer(a)) => Ok(Ok(calls::to_answer(a))),
            Ok(_) => Err(format_err!("engine answered an ask call with another outcome")),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn run_all(&mut self, img: Resource<ImageRef>, calls: Vec<Call>) -> Host<Vec<Result<Outcome, Error>>> {
        let (ctx, image) = (self.ctx()?.clone(), self.image(&img)?.clone());
        Ok(calls::run_all(&ctx, &image, &calls).await)
    }

    async fn detect_classes(
        &mut self,
        model: String,
        img: Resource<ImageRef>,
        min_confidence: f32,
        classes: Vec<String>,
    ) -> Host<Result<Vec<Detection>, Error>> {
        // classes the detector does not have: a configuration error, with its labels
        if let Some(spec) = self.ctx()?.models.spec(&model).filter(|s| !s.labels.is_empty()) {
            let unknown: Vec<&String> = classes.iter().filter(|c| !spec.labels.contains(c)).collect();
            if !unknown.is_empty() {
                return Ok(Err(Error::InvalidArgument(format!(
                    "detector {model} has no class {}; its labels: {}",
                    unknown.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
                    spec.labels.join(", ")
                ))));
            }
        }
        // the full detection list is memoised once; each filter is a view of it
        let all = expect!(self.call(&img, Call::Detect((model, min_confidence))).await?, Detect)?;
        Ok(all.map(|d| d.into_iter().filter(|d| classes.is_empty() || classes.contains(&d.label)).collect()))
    }

    async fn remaining_ms(&mut self) -> Host<u32> {
        Ok(self.ctx()?.remaining().as_millis().min(u32::MAX as u128) as u32)
    }
}

impl roles::Host for StoreState {
    async fn score_text(&mut self, lines: Vec<TextLine>) -> Host<Result<Option<f32>, Error>> {
        let (ctx, roles) = (self.ctx()?.clone(), self.roles.clone());
        let scored = match &roles {
            Some(r) => r.score_text(&ctx, lines).await,
            None => None,
        };
        Ok(scored.unwrap_or_else(|| Err(Error::UnboundRole("text-scorer".into()))))
    }

    async fn fuse(&mut self, scores: Vec<NamedScore>) -> Host<Result<f32, Error>> {
        let (ctx, roles) = (self.ctx()?.clone(), self.roles.clone());
        let fused = match &roles {
            Some(r) => r.fuse(&ctx, &scores).await,
            None => None,
        };
        Ok(fused.unwrap_or_else(|| Err(Error::UnboundRole("fuser".into()))))
    }
}
