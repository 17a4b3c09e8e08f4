//! Membership writes: adding, updating and removing group members.

use super::Groups;
use crate::db;
use crate::error::{Error, Result};
use crate::validate::{self, EXTRA_MAX, IDS_MAX, NAME_MAX};
use gim_common::{AppId, GimCode, GroupId, UserId};
use gim_proto::conn::v1::UpdateLargeGroupMembersReq;
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, QueryBuilder};

impl Groups {
    pub async fn add_members(
        &self,
        app: AppId,
        caller: Option<UserId>,
        gid: GroupId,
        ids: Vec<i64>,
    ) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Err(Error::bad_request("user_ids", "must not be empty"));
        }
        validate::ids("user_ids", &ids, IDS_MAX)?;
        let g = self.group(app, gid).await?;
        if let Some(u) = caller {
            self.require_member(app, &g, u).await?;
        }
        self.users.users_exist(app, "user_ids", &ids).await?;
        // Non-locking read (see import_users); INSERT IGNORE keeps a concurrent add harmless and
        // user_num follows the rows actually inserted.
        let mut qb = QueryBuilder::<MySql>::new("SELECT user_id FROM group_member WHERE app_id = ");
        qb.push_bind(app.0)
            .push(" AND group_id = ")
            .push_bind(gid.0)
            .push(" AND user_id");
        db::push_in(&mut qb, ids.iter().copied());
        let existing: Vec<i64> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let new: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|i| !existing.contains(i))
            .collect();
        if !new.is_empty() {
            let mut tx = self.pool.begin().await?;
            let mut qb = QueryBuilder::<MySql>::new(
                "INSERT IGNORE INTO group_member (app_id, group_id, user_id, member_type) ",
            );
            qb.push_values(&new, |mut b, u| {
                b.push_bind(app.0)
                    .push_bind(gid.0)
                    .push_bind(*u)
                    .push_bind(2i8);
            });
            let inserted = qb
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE im_group SET user_num = user_num + ? WHERE app_id = ? AND group_id = ?",
            )
            .bind(inserted as i32)
            .bind(app.0)
            .bind(gid.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        self.invalidate_group(app, gid, &new);
        if g.is_large() && !new.is_empty() {
            self.spawn_large_update(UpdateLargeGroupMembersReq {
                app_id: app.0,
                group_id: gid.0,
                joined_user_ids: new,
                left_user_ids: vec![],
                dissolved: false,
            })
            .await;
        }
        Ok(existing)
    }

    pub async fn update_member(
        &self,
        app: AppId,
        caller: UserId,
        req: pb::UpdateGroupMemberReq,
    ) -> Result<()> {
        validate::id("user_id", req.user_id)?;
        if !(1..=2).contains(&req.member_type) {
            return Err(Error::bad_request(
                "member_type",
                format!("unknown member type {}", req.member_type),
            ));
        }
        validate::text("remarks", &req.remarks, NAME_MAX, false)?;
        validate::text("extra", &req.extra, EXTRA_MAX, false)?;
        let gid = GroupId(req.group_id);
        let g = self.group(app, gid).await?;
        self.require_member(app, &g, caller).await?;
        let found: Option<i8> = sqlx::query_scalar(
            "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(req.user_id)
        .fetch_optional(&self.pool)
        .await?;
        if found.is_none() {
            return Err(Error::code(GimCode::NotInGroup, "user_id: not a member"));
        }
        sqlx::query(
            "UPDATE group_member SET member_type = ?, remarks = ?, extra = ? WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(req.member_type as i8)
        .bind(&req.remarks)
        .bind(&req.extra)
        .bind(app.0)
        .bind(gid.0)
        .bind(req.user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a member. A client may remove itself, or others when it is an admin.
    pub async fn delete_member(
        &self,
        app: AppId,
        caller: Option<UserId>,
        gid: GroupId,
        user: UserId,
    ) -> Result<()> {
        validate::id("user_id", user.0)?;
        let g = self.group(app, gid).await?;
        if let Some(c) = caller {
            self.require_member(app, &g, c).await?;
            if c != user {
                let t: Option<i8> = sqlx::query_scalar(
                    "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
                )
                .bind(app.0)
                .bind(gid.0)
                .bind(c.0)
                .fetch_optional(&self.pool)
                .await?;
                if t != Some(1) {
                    return Err(Error::code(
                        GimCode::NotInGroup,
                        "only admins may remove other members",
                    ));
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "DELETE FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(Error::code(GimCode::NotInGroup, "user_id: not a member"));
        }
        sqlx::query(
            "UPDATE im_group SET user_num = GREATEST(user_num - 1, 0) WHERE app_id = ? AND group_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.invalidate_group(app, gid, &[user.0]);
        if g.is_large() {
            self.spawn_large_update(UpdateLargeGroupMembersReq {
                app_id: app.0,
                group_id: gid.0,
                joined_user_ids: vec![],
                left_user_ids: vec![user.0],
                dissolved: false,
            })
            .await;
        }
        Ok(())
    }
}
