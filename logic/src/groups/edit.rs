//! Group writes: creating and updating groups, and the reads that list groups and members.

use super::Groups;
use crate::db::rows::{GROUP_COLS, GroupRow, MEMBER_COLS, MemberRow};
use crate::db::{self, INSERT_CHUNK};
use crate::error::{Error, Result};
use crate::validate::{self, EXTRA_MAX, IDS_MAX, INTRO_MAX, NAME_MAX, URL_MAX};
use gim_common::{AppId, GimCode, GroupId, UserId};
use gim_proto::conn::v1::UpdateLargeGroupMembersReq;
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, QueryBuilder};

impl Groups {
    fn validate_group(g: &pb::Group) -> Result<()> {
        validate::text("group.name", &g.name, NAME_MAX, true)?;
        validate::text("group.avatar_url", &g.avatar_url, URL_MAX, false)?;
        validate::text("group.introduction", &g.introduction, INTRO_MAX, false)?;
        validate::text("group.extra", &g.extra, EXTRA_MAX, false)?;
        if !(0..=2).contains(&g.r#type) {
            return Err(Error::bad_request(
                "group.type",
                format!("unknown group type {}", g.r#type),
            ));
        }
        if g.group_id < 0 {
            return Err(Error::bad_request("group.group_id", "must not be negative"));
        }
        Ok(())
    }

    /// Creates a group owned (and administered) by `owner` with `members`. `group.group_id` may
    /// name the id (1008 if taken); 0 allocates one. Type 0 means normal, as in the original.
    pub async fn create_group(
        &self,
        app: AppId,
        owner: UserId,
        g: pb::Group,
        members: Vec<i64>,
    ) -> Result<i64> {
        Self::validate_group(&g)?;
        validate::id("owner_id", owner.0)?;
        validate::ids("member_ids", &members, IDS_MAX)?;
        let members: Vec<i64> = members.into_iter().filter(|m| *m != owner.0).collect();
        self.users.users_exist(app, "owner_id", &[owner.0]).await?;
        self.users.users_exist(app, "member_ids", &members).await?;
        let kind = if g.r#type == 0 { 1 } else { g.r#type as i8 };
        let explicit = g.group_id > 0;
        for _ in 0..3 {
            let gid = if explicit {
                g.group_id
            } else {
                self.ids.next::<GroupId>(&self.pool).await?.0
            };
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "INSERT INTO im_group (app_id, group_id, name, avatar_url, introduction, type, owner_id, user_num, extra) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(app.0)
            .bind(gid)
            .bind(&g.name)
            .bind(&g.avatar_url)
            .bind(&g.introduction)
            .bind(kind)
            .bind(owner.0)
            .bind(members.len() as i32 + 1)
            .bind(&g.extra)
            .execute(&mut *tx)
            .await;
            match r {
                Ok(_) => {}
                Err(e) if db::is_duplicate(&e) && explicit => {
                    return Err(GimCode::GroupAlreadyExists.into());
                }
                // An explicit id of another caller took an allocated one: take the next.
                Err(e) if db::is_duplicate(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut all = vec![(owner.0, 1i8)];
            all.extend(members.iter().map(|m| (*m, 2i8)));
            for chunk in all.chunks(INSERT_CHUNK) {
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO group_member (app_id, group_id, user_id, member_type) ",
                );
                qb.push_values(chunk, |mut b, (u, t)| {
                    b.push_bind(app.0)
                        .push_bind(gid)
                        .push_bind(*u)
                        .push_bind(*t);
                });
                qb.build().persistent(false).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            let all_ids: Vec<i64> = all.iter().map(|x| x.0).collect();
            self.invalidate_group(app, GroupId(gid), &all_ids);
            if kind == pb::GroupType::Large as i8 {
                self.spawn_large_update(UpdateLargeGroupMembersReq {
                    app_id: app.0,
                    group_id: gid,
                    joined_user_ids: all_ids,
                    left_user_ids: vec![],
                    dissolved: false,
                })
                .await;
            }
            return Ok(gid);
        }
        Err(Error::Internal("could not allocate a free group id".into()))
    }

    pub async fn update_group(
        &self,
        app: AppId,
        caller: Option<UserId>,
        req: pb::UpdateGroupReq,
    ) -> Result<()> {
        let gid = GroupId(req.group_id);
        validate::text("name", &req.name, NAME_MAX, true)?;
        validate::text("avatar_url", &req.avatar_url, URL_MAX, false)?;
        validate::text("introduction", &req.introduction, INTRO_MAX, false)?;
        validate::text("extra", &req.extra, EXTRA_MAX, false)?;
        let g = self.group(app, gid).await?;
        if let Some(u) = caller {
            self.require_member(app, &g, u).await?;
        }
        sqlx::query(
            "UPDATE im_group SET name = ?, avatar_url = ?, introduction = ?, extra = ? WHERE app_id = ? AND group_id = ?",
        )
        .bind(&req.name)
        .bind(&req.avatar_url)
        .bind(&req.introduction)
        .bind(&req.extra)
        .bind(app.0)
        .bind(gid.0)
        .execute(&self.pool)
        .await?;
        self.invalidate_group(app, gid, &[]);
        Ok(())
    }

    pub async fn user_groups(&self, app: AppId, user: UserId) -> Result<Vec<pb::Group>> {
        let sql = format!(
            "SELECT {GROUP_COLS} FROM group_member m \
             JOIN im_group g ON g.app_id = m.app_id AND g.group_id = m.group_id \
             WHERE m.app_id = ? AND m.user_id = ? ORDER BY g.group_id"
        );
        let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(user.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(GroupRow::to_pb).collect())
    }

    pub async fn group_members(&self, app: AppId, gid: GroupId) -> Result<Vec<pb::GroupMember>> {
        self.group(app, gid).await?;
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM group_member m \
             LEFT JOIN user u ON u.app_id = m.app_id AND u.user_id = m.user_id \
             WHERE m.app_id = ? AND m.group_id = ? ORDER BY m.user_id"
        );
        let rows: Vec<MemberRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(gid.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(pb::GroupMember::from).collect())
    }
}
