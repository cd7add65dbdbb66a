//! The words the incident page uses for an incident's states and a worker's steps.

/// The incident's state as the page says it.
pub fn state_label(state: &str) -> &str {
    match state {
        "open" => "待接单",
        "accepted" => "已接单",
        "on_site" => "已到场",
        "resolved" => "已办结",
        "closed" => "已关闭",
        other => other,
    }
}

/// A step of the audit trail as the page says it ("transfer to zhao" is said by the history).
pub fn action_label(action: &str) -> &str {
    match action {
        "accept" => "接单",
        "on_site" => "到场",
        "resolve" => "办结",
        "close" => "关闭",
        "comment" => "留言",
        "follow_up" => "回访",
        "transfer" => "转交",
        "helper" => "加协助人",
        other => other,
    }
}
