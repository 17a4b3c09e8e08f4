-- gim schema: history, recall, edit and delete-for-me (issue 20 items 3 and 4).

-- Each user-list copy names its conversation from the owner's view (as `conversation` does:
-- ReceiverType 1 with the other user or a business sender's id, 2 with the group), so one
-- conversation's history is an index range read newest first. System notices keep 0 (in no
-- conversation's history). edit_version counts a message's edits.
ALTER TABLE user_message
    ADD COLUMN peer_type    TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN peer_id      BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN edit_version BIGINT  NOT NULL DEFAULT 0;

-- Copies stored before this migration (sender_type 1 is SYSTEM, 2 USER).
UPDATE user_message SET peer_type = 2, peer_id = receiver_id
    WHERE receiver_type = 2 AND sender_type <> 1;
UPDATE user_message SET peer_type = 1,
    peer_id = IF(sender_type = 2 AND sender_id = user_id, receiver_id, sender_id)
    WHERE receiver_type = 1 AND sender_type <> 1;

-- History: (owner, conversation, seq desc). Recall and edit: every copy of a message id.
ALTER TABLE user_message
    ADD KEY idx_user_message_peer (app_id, user_id, peer_type, peer_id, seq),
    ADD KEY idx_user_message_id (app_id, message_id);

ALTER TABLE group_message ADD COLUMN edit_version BIGINT NOT NULL DEFAULT 0;

-- Seconds after sending during which a user may recall or edit its own message.
ALTER TABLE app ADD COLUMN recall_window_secs INT NOT NULL DEFAULT 120;
