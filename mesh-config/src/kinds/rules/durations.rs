//! Duration fields (`google.protobuf.Duration`): the CRD's CEL rule and istiod's
//! `ValidateDuration`.

use std::time::Duration as StdDuration;

use crate::kinds::{Issues, common::Duration};

/// Which rules apply to a duration field: the CRD's CEL rule (`>= 1ms`), istiod's
/// `ValidateDuration` (`>= 1ms`, whole milliseconds), or both.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationRule {
    Cel,
    Webhook,
    CelAndWebhook,
}

/// Checks a duration field, when set, against `rule`; Istio's message for each rule.
pub(crate) fn check_duration(
    out: &mut Issues,
    path: &str,
    d: Option<Duration>,
    rule: DurationRule,
) {
    let Some(d) = d else { return };
    let ms = StdDuration::from_millis(1);
    if d.get() < ms {
        let msg = match rule {
            DurationRule::Webhook => "duration must be greater than 1ms".to_owned(),
            _ => format!("Invalid value: \"{d:?}\": must be a valid duration greater than 1ms"),
        };
        out.error(path, msg);
    } else if rule != DurationRule::Cel && d.get().subsec_nanos() % 1_000_000 != 0 {
        out.error(
            path,
            format!("only durations to ms precision are supported (got {d:?})"),
        );
    }
}
