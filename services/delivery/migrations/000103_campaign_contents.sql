-- migrate:up
-- Read model of campaigns' content (campaign.created / campaign.updated): what
-- `POST /api/v1/emails/send-bulk` with a `campaign_id` and no content of its own sends.
CREATE TABLE campaign_contents (
    tenant_id    text NOT NULL,
    mode         text NOT NULL,
    campaign_id  text NOT NULL,
    subject      text,
    html         text,
    text_body    text,
    template_id  text,
    from_email   text,
    from_name    text,
    reply_to     text,
    category     text NOT NULL DEFAULT 'marketing',
    track_opens  boolean NOT NULL DEFAULT true,
    track_clicks boolean NOT NULL DEFAULT true,
    event_time   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, mode, campaign_id)
);

-- migrate:down
DROP TABLE campaign_contents;
