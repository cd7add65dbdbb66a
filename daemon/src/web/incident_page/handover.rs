//! Telling a member that an incident was handed to them (转交) or that they were asked to help
//! (加协助人): the incident's latest alert, headed "转交给你" / "请协助处理", on the member's own
//! channels with the member's own link. It is journaled like any alert, so the channels send it
//! within a second and a restart does not lose it.

use super::WebState;
use crate::alert::{Alert, Event};
use crate::store::Work;
use std::collections::BTreeMap;

/// The events of the two messages.
pub const HANDED_OVER: Event = Event::HandedOver;
pub const HELP_ASKED: Event = Event::HelpAsked;

/// Journals the message for the member `work` names, if it hands over or adds a helper and the
/// member has channels of their own; `about` is the incident's latest alert.
pub async fn tell(state: &WebState, incident: i64, about: Option<&Alert>, work: &Work, now_ms: i64) {
    let (event, person) = match work {
        Work::Transfer { person } => (HANDED_OVER, person),
        Work::AddHelper { person } => (HELP_ASKED, person),
        _ => return,
    };
    let dispatch = state.page.dispatch.get();
    let (Some(about), Some(member)) = (about, dispatch.roster.members.iter().find(|m| &m.id == person)) else { return };
    if member.channels.is_empty() {
        return;
    }
    let mut alert = about.clone();
    alert.event = event;
    alert.at_ms = now_ms;
    alert.incident_id = Some(incident);
    alert.previous_severity = None;
    alert.link = state.links.as_ref().map(|links| {
        links.signing_on(&state.clock);
        links.member_link(incident, &member.id, now_ms.div_euclid(1000))
    });
    alert.member_links = alert.link.iter().map(|link| (member.name.clone(), link.clone())).collect::<BTreeMap<_, _>>();
    alert.recipients = vec![member.name.clone()];
    alert.mentions = if member.phone.is_empty() { Vec::new() } else { vec![member.phone.clone()] };
    let destinations = member.channels.iter().map(|channel| (channel.clone(), None)).collect();
    match state.store.record_alert_to(&alert, destinations, None).await {
        Ok(_) => state.metrics.take_on_deliveries(&member.channels, 1),
        Err(error) => state.store.report_failure("journaling a hand-over message (the member is not told)", &error),
    }
}
