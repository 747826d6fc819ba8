//! Gap notices: when a client's stored position on a channel stops meaning anything.
//!
//! A client keeps the position of the last message it got per channel and
//! resumes from it. Two things void that position while the client stays
//! connected, and both must be said before the next message of the channel,
//! in a `gap` frame (`docs/protocol.md`):
//!
//! - the broker could not fill a gap of its own (its Redis connection dropped
//!   and history no longer covers the outage) and sends a [`Gap`] notice
//!   through the hub, in order with the channel's messages;
//! - a message arrives from another epoch than the client's position: the
//!   channel's history was lost and started again (Redis restarted empty), and
//!   the broker had nothing to compare with.
//!
//! Either way the client's position is replaced, so the notice is sent once.

use herald_broker::Gap;
use herald_protocol::{GapReason, Position, ServerFrame};

use crate::delivery::Delivery;

/// The `gap` frame to send before `delivery` to a client whose last position on
/// the delivery's channel is `last`, if any; updates `last` to the position the
/// frame announces.
///
/// A broker's notice the client is already past (it subscribed after the
/// position the notice names) is not sent.
pub fn notice(last: &mut Option<Position>, delivery: &Delivery) -> Option<ServerFrame> {
    if let Some(gap) = delivery.gap() {
        return announced(last, gap);
    }
    let position = delivery.position()?;
    let held = last.as_ref()?;
    if held.epoch == position.epoch {
        return None;
    }
    // A client that subscribed before the channel's first publish holds offset 0 of an
    // epoch no message carries (reading creates no epoch); the epoch's first message
    // is exactly the next one for it, not a gap.
    if held.offset == 0 && position.offset == 1 {
        return None;
    }
    // The message is the first this client sees of the new epoch: it comes right after `now`.
    let now = Position::new(position.offset.saturating_sub(1), position.epoch.clone());
    *last = Some(now.clone());
    Some(frame(
        delivery.channel().as_str(),
        GapReason::EpochChanged,
        Some(now),
    ))
}

fn announced(last: &mut Option<Position>, gap: &Gap) -> Option<ServerFrame> {
    if let (Some(held), Some(now)) = (last.as_ref(), gap.position.as_ref())
        && held.epoch == now.epoch
        && held.offset >= now.offset
    {
        return None;
    }
    last.clone_from(&gap.position);
    Some(frame(
        gap.channel.as_str(),
        gap.reason,
        gap.position.clone(),
    ))
}

fn frame(channel: &str, reason: GapReason, position: Option<Position>) -> ServerFrame {
    ServerFrame::Gap {
        channel: channel.to_owned(),
        reason,
        position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use herald_broker::BusMessage;
    use herald_protocol::ChannelName;

    fn news() -> ChannelName {
        ChannelName::new("news").unwrap()
    }

    fn message(offset: u64, epoch: &str) -> Delivery {
        Delivery::from(BusMessage {
            channel: news(),
            payload: Bytes::from_static(b"1"),
            position: Some(Position::new(offset, epoch)),
            time_ms: Some(1),
            json: true,
        })
    }

    fn gap(reason: GapReason, position: Option<Position>) -> Delivery {
        Delivery::from(Gap {
            channel: news(),
            reason,
            position,
        })
    }

    #[test]
    fn a_message_of_a_new_epoch_is_announced_once_then_delivered() {
        let mut last = Some(Position::new(7, "old"));
        assert_eq!(
            notice(&mut last, &message(1, "new")),
            Some(frame(
                "news",
                GapReason::EpochChanged,
                Some(Position::new(0, "new"))
            ))
        );
        assert_eq!(last, Some(Position::new(0, "new")));
        assert_eq!(notice(&mut last, &message(1, "new")), None);
        // The same epoch never is a gap, nor is a message with no position or a client with none.
        assert_eq!(
            notice(&mut Some(Position::new(7, "e")), &message(9, "e")),
            None
        );
        assert_eq!(notice(&mut None, &message(1, "new")), None);
    }

    #[test]
    fn the_first_message_of_a_channel_is_no_gap_for_a_client_that_came_first() {
        // Subscribed before any publish: offset 0 of a one-off epoch.
        let mut last = Some(Position::new(0, "one-off"));
        assert_eq!(notice(&mut last, &message(1, "born")), None);
        // Messages 1..4 came and went unseen: that is a gap.
        let mut last = Some(Position::new(0, "one-off"));
        assert!(notice(&mut last, &message(5, "born")).is_some());
    }

    #[test]
    fn a_broker_notice_replaces_the_position_unless_the_client_is_past_it() {
        let mut last = Some(Position::new(3, "e"));
        let trimmed = gap(GapReason::Unrecoverable, Some(Position::new(90, "e")));
        assert_eq!(
            notice(&mut last, &trimmed),
            Some(frame(
                "news",
                GapReason::Unrecoverable,
                Some(Position::new(90, "e"))
            ))
        );
        assert_eq!(last, Some(Position::new(90, "e")));
        // A client that subscribed after the notice's position lost nothing.
        assert_eq!(notice(&mut Some(Position::new(95, "e")), &trimmed), None);
        // An unknown position voids the client's own.
        let mut last = Some(Position::new(3, "e"));
        assert!(notice(&mut last, &gap(GapReason::Unrecoverable, None)).is_some());
        assert_eq!(last, None);
    }
}
