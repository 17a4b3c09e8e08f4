//! Membership writes: adding, updating and removing group members.

use super::Groups;
use crate::db;
use crate::error::{Error, Result};
use crate::validate::{self, EXTRA_MAX, IDS_MAX, NAME_MAX};
use gim_common::{AppId, GimCode, GroupId, UserId};
use gim_proto::conn::v1::UpdateLargeGroupMembersReq;
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, QueryBuilder};

/// `group_member.member_type` of an admin (the owner is one).
const ADMIN: i8 = 1;

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

    /// The member type of `user` in the group (`None`: not a member), read from MySQL: role
    /// checks must not act on a cached role an admin just took away.
    async fn member_type(&self, app: AppId, gid: GroupId, user: UserId) -> Result<Option<i8>> {
        Ok(sqlx::query_scalar(
            "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Changes a member's role, remarks and extra (client API only). A member may update its
    /// own entry but not its role; an admin may update anyone's, except the owner's role.
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
        let caller_type = self
            .member_type(app, gid, caller)
            .await?
            .ok_or(GimCode::NotInGroup)?;
        let target_type = if req.user_id == caller.0 {
            Some(caller_type)
        } else {
            self.member_type(app, gid, UserId(req.user_id)).await?
        };
        let Some(target_type) = target_type else {
            return Err(Error::code(GimCode::NotInGroup, "user_id: not a member"));
        };
        // A plain member edits only its own remarks and extra; roles are an admin's to change,
        // and the owner stays an admin (else a member could promote itself, then demote or
        // remove the owner). Business servers do not come through here.
        let is_admin = caller_type == ADMIN;
        if req.user_id != caller.0 && !is_admin {
            return Err(Error::code(
                GimCode::NotInGroup,
                "only admins may update other members",
            ));
        }
        if req.member_type != i32::from(target_type) {
            if !is_admin {
                return Err(Error::code(
                    GimCode::NotInGroup,
                    "only admins may change a member's role",
                ));
            }
            if req.user_id == g.owner_id {
                return Err(Error::code(
                    GimCode::NotInGroup,
                    "the group owner's role cannot change",
                ));
            }
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
            let t = self
                .member_type(app, gid, c)
                .await?
                .ok_or(GimCode::NotInGroup)?;
            if c != user {
                if t != ADMIN {
                    return Err(Error::code(
                        GimCode::NotInGroup,
                        "only admins may remove other members",
                    ));
                }
                if user.0 == g.owner_id {
                    return Err(Error::code(
                        GimCode::NotInGroup,
                        "the group owner cannot be removed by another member",
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
