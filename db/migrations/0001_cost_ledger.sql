CREATE TABLE "daily_usage" (
	"user_id" text NOT NULL,
	"day" date NOT NULL,
	"model" text NOT NULL,
	"requests" bigint NOT NULL,
	"errors" bigint NOT NULL,
	"cache_hits" bigint NOT NULL,
	"prompt_tokens" bigint NOT NULL,
	"completion_tokens" bigint NOT NULL,
	"cost_nano_usd" bigint NOT NULL,
	"saved_nano_usd" bigint NOT NULL,
	CONSTRAINT "daily_usage_user_id_day_model_pk" PRIMARY KEY("user_id","day","model")
);
--> statement-breakpoint
CREATE TABLE "usage_events" (
	"request_id" text PRIMARY KEY NOT NULL,
	"client_request_id" text,
	"started_at" timestamp with time zone NOT NULL,
	"key_id" text NOT NULL,
	"user_id" text NOT NULL,
	"tier" text NOT NULL,
	"route" text NOT NULL,
	"requested_model" text NOT NULL,
	"served_model" text NOT NULL,
	"provider" text,
	"stream" boolean NOT NULL,
	"status" integer NOT NULL,
	"outcome" text NOT NULL,
	"error_code" text,
	"cache_status" text NOT NULL,
	"prompt_tokens" integer NOT NULL,
	"completion_tokens" integer NOT NULL,
	"cached_tokens" integer NOT NULL,
	"cost_nano_usd" bigint NOT NULL,
	"saved_nano_usd" bigint NOT NULL,
	"latency_ms" integer NOT NULL,
	"ttft_ms" integer,
	"attempts" integer NOT NULL,
	CONSTRAINT "usage_events_outcome_check" CHECK ("usage_events"."outcome" in ('ok', 'error', 'cancelled', 'cached'))
);
--> statement-breakpoint
CREATE TABLE "user_budgets" (
	"user_id" text PRIMARY KEY NOT NULL,
	"monthly_budget_nano_usd" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "daily_usage_day_idx" ON "daily_usage" USING btree ("day");--> statement-breakpoint
CREATE INDEX "usage_events_started_at_idx" ON "usage_events" USING btree ("started_at");--> statement-breakpoint
CREATE INDEX "usage_events_key_id_started_at_idx" ON "usage_events" USING btree ("key_id","started_at");