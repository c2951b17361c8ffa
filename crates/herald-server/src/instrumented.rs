//! A stream that enters its tracing span while polled, so a response body's log lines carry
//! its connection's fields (the stream counterpart of `tracing::Instrument`).

use std::pin::Pin;

pub(crate) trait InstrumentStream: Sized {
    fn instrument_stream(self, span: tracing::Span) -> Instrumented<Self>;
}

impl<S> InstrumentStream for S {
    fn instrument_stream(self, span: tracing::Span) -> Instrumented<Self> {
        Instrumented { inner: self, span }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct Instrumented<S> {
        #[pin]
        inner: S,
        span: tracing::Span,
    }
}

impl<S: futures_util::Stream> futures_util::Stream for Instrumented<S> {
    type Item = S::Item;
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = self.project();
        let _guard = this.span.enter();
        this.inner.poll_next(cx)
    }
}
